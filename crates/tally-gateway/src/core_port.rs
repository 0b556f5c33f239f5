//! The client as the core's `Gateway` port: the gateway's outcomes mapped
//! onto the verdicts the use cases decide on.
//!
//! The mapping keeps one rule: only a definite answer is definite. "Already
//! processed" on a confirm means *some* confirm took effect, not that ours
//! did with our amount, so it is `Unknown` and gets looked up. A cancel the
//! gateway refuses, or a done payment it does not know, is not a cancel:
//! the payment stays `cancelling` for the completer (and an operator).

use tally_core::gateway::{CancelResult, Confirmed, Gateway, LookedUp};
use tally_core::money::Amount;

use crate::{CancelOutcome, ConfirmOutcome, GatewayClient, LookupOutcome};

/// Why we cancel, as the gateway records it.
pub const CANCEL_REASON: &str = "cancelled by the customer";

impl Gateway for GatewayClient {
    async fn confirm(&self, payment_key: &str, order_id: &str, amount: Amount, idempotency_key: &str) -> Confirmed {
        confirmed(GatewayClient::confirm(self, payment_key, order_id, amount.minor_units(), idempotency_key).await)
    }

    async fn lookup(&self, payment_key: &str) -> LookedUp {
        looked_up(GatewayClient::lookup(self, payment_key).await)
    }

    async fn cancel(&self, payment_key: &str, idempotency_key: &str) -> CancelResult {
        cancel_result(GatewayClient::cancel(self, payment_key, CANCEL_REASON, idempotency_key).await)
    }
}

/// The verdict of a confirm outcome. Public so that another transport (the
/// simulation's) maps replies exactly as this client does.
pub fn confirmed(outcome: ConfirmOutcome) -> Confirmed {
    match outcome {
        // The order id goes through: the core adopts a charge only if it was
        // made for our payment (a payment key reused across payments).
        ConfirmOutcome::Approved { amount, order_id, .. } => Confirmed::Approved { amount, order_id },
        ConfirmOutcome::Declined { code, .. } => Confirmed::Declined { code },
        ConfirmOutcome::AlreadyProcessed => Confirmed::Unknown { reason: "ALREADY_PROCESSED_PAYMENT".into() },
        ConfirmOutcome::Unknown { reason } => Confirmed::Unknown { reason },
    }
}

/// The verdict of a lookup outcome.
pub fn looked_up(outcome: LookupOutcome) -> LookedUp {
    match outcome {
        // The order id goes through here too: a lookup answers about a key,
        // and the key may have been charged for somebody else's order.
        LookupOutcome::Done { amount, order_id, status } if status == "DONE" => LookedUp::Done { amount, order_id },
        LookupOutcome::Done { order_id, status, .. } if status == "CANCELED" || status == "PARTIAL_CANCELED" => {
            LookedUp::Cancelled { order_id }
        }
        LookupOutcome::Done { status, .. } => LookedUp::Unknown { reason: format!("gateway status {status}") },
        LookupOutcome::NotFound => LookedUp::NotFound,
        LookupOutcome::Unknown { reason } => LookedUp::Unknown { reason },
    }
}

/// The verdict of a cancel outcome.
pub fn cancel_result(outcome: CancelOutcome) -> CancelResult {
    match outcome {
        CancelOutcome::Cancelled | CancelOutcome::AlreadyCancelled => CancelResult::Cancelled,
        CancelOutcome::NotFound => CancelResult::Unknown { reason: "the gateway does not know this payment".into() },
        CancelOutcome::Refused { code, .. } => CancelResult::Unknown { reason: format!("cancel refused: {code}") },
        CancelOutcome::Unknown { reason } => CancelResult::Unknown { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(status: &str) -> LookupOutcome {
        LookupOutcome::Done { amount: 1_000, order_id: "order-p1".into(), status: status.into() }
    }

    #[test]
    fn an_approval_keeps_the_order_id_it_was_charged_for() {
        // Hole 1: the core adopts a charge only for its own order id, so the
        // id must reach it exactly as the gateway said it.
        let approved = ConfirmOutcome::Approved {
            payment_key: "pk".into(),
            order_id: "order-p1".into(),
            amount: 1_000,
            approved_at: "2026-11-23T00:00:00+00:00".into(),
        };
        assert_eq!(confirmed(approved), Confirmed::Approved { amount: 1_000, order_id: "order-p1".into() });
    }

    #[test]
    fn a_lookup_keeps_the_order_id_the_key_was_charged_for() {
        assert_eq!(looked_up(lookup("DONE")), LookedUp::Done { amount: 1_000, order_id: "order-p1".into() });
        for cancelled in ["CANCELED", "PARTIAL_CANCELED"] {
            assert_eq!(looked_up(lookup(cancelled)), LookedUp::Cancelled { order_id: "order-p1".into() });
        }
        assert!(matches!(looked_up(lookup("WAITING_FOR_DEPOSIT")), LookedUp::Unknown { .. }));
        assert_eq!(looked_up(LookupOutcome::NotFound), LookedUp::NotFound);
    }

    #[test]
    fn already_processed_is_never_an_approval() {
        // Some confirm charged the key, maybe for another order: only a
        // lookup (with its order id) can say whose charge it is.
        assert!(matches!(confirmed(ConfirmOutcome::AlreadyProcessed), Confirmed::Unknown { .. }));
    }
}
