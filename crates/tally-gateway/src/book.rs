//! The gateway's books: which payment keys it charged, for which order and
//! amount, and which charges it refunded. Every fake of the gateway keeps
//! its payments here, so the rule the use cases are built around has one
//! implementation: **a payment key is charged at most once** — any later
//! confirm of it is refused "already processed", whatever its order id,
//! amount or idempotency key (seed 003) — and a charge is refunded at most
//! once.
//!
//! Two fakes keep a [`Book`]: the HTTP fake ([`FakeGateway`], which adds the
//! wire format, counters and faults) and `tally-mem`'s in-process
//! `MemGateway` (which runs under shuttle). So the book is plain data with no
//! lock and no dependency: each fake holds it under its own mutex (std's, or
//! `tally_lock::sync`'s under the model checkers), and it builds without this
//! crate's `http` feature.
//!
//! [`FakeGateway`]: crate::FakeGateway

use std::collections::{BTreeMap, BTreeSet};

use crate::codes;

/// One charge the gateway holds. `At` is what the gateway stamps its
/// approval and refund with: the HTTP fake's RFC 3339 strings, or `()` where
/// nobody reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge<At> {
    pub order_id: String,
    pub amount: i64,
    pub approved_at: At,
    /// When the charge was refunded, if it was.
    pub canceled_at: Option<At>,
}

impl<At> Charge<At> {
    pub fn is_cancelled(&self) -> bool {
        self.canceled_at.is_some()
    }
}

/// Why a confirm charged nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfirmRefusal {
    /// The key was charged before (for this order or another).
    AlreadyProcessed,
    /// The card issuer declined the key.
    Declined,
    /// The amount differs from the one the customer authorised.
    AmountDiffers { authorised: i64 },
}

impl ConfirmRefusal {
    /// The gateway's error code for this refusal.
    pub fn code(self) -> &'static str {
        match self {
            ConfirmRefusal::AlreadyProcessed => codes::ALREADY_PROCESSED_PAYMENT,
            ConfirmRefusal::Declined => codes::REJECT_CARD_PAYMENT,
            ConfirmRefusal::AmountDiffers { .. } => codes::INVALID_REQUEST,
        }
    }
}

/// Why a cancel refunded nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRefusal {
    /// The key was never charged.
    NotFound,
    /// The charge was refunded before: the money already went back.
    AlreadyCancelled,
}

/// The gateway's payments by payment key, with what the customer
/// authorised and what the issuer declines.
#[derive(Clone, Debug)]
pub struct Book<At> {
    authorised: BTreeMap<String, i64>,
    declined: BTreeSet<String>,
    charges: BTreeMap<String, Charge<At>>,
}

impl<At> Default for Book<At> {
    fn default() -> Self {
        Self { authorised: BTreeMap::new(), declined: BTreeSet::new(), charges: BTreeMap::new() }
    }
}

impl<At> Book<At> {
    /// Fix the amount the customer authorised for `payment_key`: a confirm
    /// with another amount is then refused.
    pub fn register(&mut self, payment_key: &str, amount: i64) {
        self.authorised.insert(payment_key.to_owned(), amount);
    }

    /// Make every confirm of `payment_key` a decline.
    pub fn decline(&mut self, payment_key: &str) {
        self.declined.insert(payment_key.to_owned());
    }

    /// Charge `payment_key` for `order_id`, unless it was charged before,
    /// is declined, or `amount` differs from the authorised amount (checked
    /// in that order: a charged key stays charged, and every later confirm
    /// gets the same refusal). `approved_at` is called only for a charge.
    pub fn confirm(
        &mut self,
        payment_key: &str,
        order_id: &str,
        amount: i64,
        approved_at: impl FnOnce() -> At,
    ) -> Result<&Charge<At>, ConfirmRefusal> {
        if self.charges.contains_key(payment_key) {
            return Err(ConfirmRefusal::AlreadyProcessed);
        }
        if self.declined.contains(payment_key) {
            return Err(ConfirmRefusal::Declined);
        }
        if let Some(&authorised) = self.authorised.get(payment_key)
            && authorised != amount
        {
            return Err(ConfirmRefusal::AmountDiffers { authorised });
        }
        let charge = Charge { order_id: order_id.to_owned(), amount, approved_at: approved_at(), canceled_at: None };
        Ok(self.charges.entry(payment_key.to_owned()).or_insert(charge))
    }

    /// Refund the charge of `payment_key`, once.
    pub fn cancel(&mut self, payment_key: &str, canceled_at: At) -> Result<&Charge<At>, CancelRefusal> {
        let charge = self.charges.get_mut(payment_key).ok_or(CancelRefusal::NotFound)?;
        if charge.is_cancelled() {
            return Err(CancelRefusal::AlreadyCancelled);
        }
        charge.canceled_at = Some(canceled_at);
        Ok(charge)
    }

    /// The charge of `payment_key`, as a lookup finds it.
    pub fn charge(&self, payment_key: &str) -> Option<&Charge<At>> {
        self.charges.get(payment_key)
    }

    /// Every charge, by payment key.
    pub fn charges(&self) -> &BTreeMap<String, Charge<At>> {
        &self.charges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_charged_once_whatever_the_later_confirms_say() {
        let mut book = Book::default();
        assert_eq!(book.confirm("pk", "order-1", 1_000, || 1).map(|c| c.amount), Ok(1_000));
        for (order_id, amount) in [("order-1", 1_000), ("order-2", 1_000), ("order-3", 1_001)] {
            assert_eq!(book.confirm("pk", order_id, amount, || 2), Err(ConfirmRefusal::AlreadyProcessed));
        }
        let first = Charge { order_id: "order-1".to_owned(), amount: 1_000, approved_at: 1, canceled_at: None };
        assert_eq!(book.charge("pk"), Some(&first));
        assert_eq!(book.charges().len(), 1);
    }

    #[test]
    fn a_charge_is_refunded_once_and_stays_charged() {
        let mut book = Book::default();
        assert_eq!(book.cancel("pk", ()), Err(CancelRefusal::NotFound));
        book.confirm("pk", "order-1", 500, || ()).expect("charged");
        assert!(book.cancel("pk", ()).is_ok_and(Charge::is_cancelled));
        assert_eq!(book.cancel("pk", ()), Err(CancelRefusal::AlreadyCancelled));
        assert_eq!(book.confirm("pk", "order-1", 500, || ()), Err(ConfirmRefusal::AlreadyProcessed));
    }

    #[test]
    fn declined_keys_and_other_amounts_charge_nothing() {
        let mut book = Book::default();
        book.decline("pk-declined");
        book.register("pk-authorised", 700);
        assert_eq!(book.confirm("pk-declined", "o", 1, || ()), Err(ConfirmRefusal::Declined));
        let differs = book.confirm("pk-authorised", "o", 701, || ());
        assert_eq!(differs, Err(ConfirmRefusal::AmountDiffers { authorised: 700 }));
        assert!(book.charges().is_empty());
        assert!(book.confirm("pk-authorised", "o", 700, || ()).is_ok());
    }
}
