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
        ConfirmOutcome::Approved { amount, .. } => Confirmed::Approved { amount },
        ConfirmOutcome::Declined { code, .. } => Confirmed::Declined { code },
        ConfirmOutcome::AlreadyProcessed => Confirmed::Unknown { reason: "ALREADY_PROCESSED_PAYMENT".into() },
        ConfirmOutcome::Unknown { reason } => Confirmed::Unknown { reason },
    }
}

/// The verdict of a lookup outcome.
pub fn looked_up(outcome: LookupOutcome) -> LookedUp {
    match outcome {
        LookupOutcome::Done { amount, status, .. } if status == "DONE" => LookedUp::Done { amount },
        LookupOutcome::Done { status, .. } if status == "CANCELED" || status == "PARTIAL_CANCELED" => {
            LookedUp::Cancelled
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
