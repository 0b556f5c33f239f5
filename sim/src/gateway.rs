//! The servers' payment-gateway client in the simulation: the core's
//! `Gateway` port over simulated HTTP to the fake gateway host.
//!
//! It speaks the real protocol with `tally-gateway`'s own request shapes,
//! reply classification (`protocol::classify_*`) and verdict mapping
//! (`core_port`), so only the transport differs from `GatewayClient`: one
//! request per connection, one timeout, never a retry. The gateway is then a
//! host like any other — it can be slow, partitioned away or crashed — and
//! the fake counts every confirm that reaches it.

use std::time::Duration;

use tally_core::gateway::{CancelResult, Confirmed, Gateway, LookedUp};
use tally_core::money::Amount;
use tally_gateway::core_port::{self, CANCEL_REASON};
use tally_gateway::protocol::{self, CancelBody, ConfirmBody, IDEMPOTENCY_KEY_HEADER};
use tally_gateway::{CancelOutcome, ConfirmOutcome, LookupOutcome};

use crate::journal::{Count, Journal};
use crate::net;

/// The gateway host's name.
pub const GATEWAY_HOST: &str = "gateway";
/// The secret key the fake accepts.
pub const SECRET_KEY: &str = "sim_sk";

/// One server incarnation's gateway client.
#[derive(Clone, Debug)]
pub struct SimGateway {
    /// The server host this client runs on (for the crash bookkeeping).
    host: String,
    timeout: Duration,
    authorization: String,
    journal: Journal,
}

impl SimGateway {
    pub fn new(host: &str, timeout: Duration, journal: Journal) -> SimGateway {
        SimGateway { host: host.to_owned(), timeout, authorization: protocol::basic_authorization(SECRET_KEY), journal }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut headers = vec![("authorization", self.authorization.as_str())];
        headers.extend(idempotency_key.map(|key| (IDEMPOTENCY_KEY_HEADER, key)));
        let request = net::request(method, GATEWAY_HOST, path, &headers, body);
        match net::exchange(GATEWAY_HOST, request, self.timeout).await {
            Ok(reply) => Ok((reply.status, reply.body)),
            Err(failure) => Err(failure.to_string()),
        }
    }

    fn unclear(&self, call: &str, payment_key: &str, reason: &str) {
        self.journal.count(Count::GatewayOutcomeUnknown, 1);
        self.journal.event(&self.host, format!("gateway {call} of {payment_key} unclear: {reason}"));
    }
}

impl Gateway for SimGateway {
    async fn confirm(&self, payment_key: &str, order_id: &str, amount: Amount, idempotency_key: &str) -> Confirmed {
        let sent = ConfirmBody {
            payment_key: payment_key.to_owned(),
            order_id: order_id.to_owned(),
            amount: amount.minor_units(),
        };
        let body = serde_json::to_vec(&sent).expect("a confirm body serialises");
        self.journal.confirm_sent(&self.host, payment_key);
        self.journal.event(&self.host, format!("gateway confirm {payment_key} sent"));
        let outcome = match self.send("POST", protocol::CONFIRM_PATH, Some(idempotency_key), Some(body)).await {
            Ok((status, body)) => protocol::classify_confirm(&sent, status, &body),
            Err(reason) => ConfirmOutcome::Unknown { reason },
        };
        let verdict = core_port::confirmed(outcome);
        match &verdict {
            Confirmed::Unknown { reason } => self.unclear("confirm", payment_key, reason),
            other => self.journal.event(&self.host, format!("gateway confirm {payment_key}: {other:?}")),
        }
        verdict
    }

    async fn lookup(&self, payment_key: &str) -> LookedUp {
        let outcome = match self.send("GET", &protocol::payment_path(payment_key), None, None).await {
            Ok((status, body)) => protocol::classify_lookup(payment_key, status, &body),
            Err(reason) => LookupOutcome::Unknown { reason },
        };
        let verdict = core_port::looked_up(outcome);
        match &verdict {
            LookedUp::Unknown { reason } => self.unclear("lookup", payment_key, reason),
            other => self.journal.event(&self.host, format!("gateway lookup {payment_key}: {other:?}")),
        }
        verdict
    }

    async fn cancel(&self, payment_key: &str, idempotency_key: &str) -> CancelResult {
        let body = serde_json::to_vec(&CancelBody { cancel_reason: CANCEL_REASON.to_owned() })
            .expect("a cancel body serialises");
        let path = protocol::cancel_path(payment_key);
        let outcome = match self.send("POST", &path, Some(idempotency_key), Some(body)).await {
            Ok((status, body)) => protocol::classify_cancel(payment_key, status, &body),
            Err(reason) => CancelOutcome::Unknown { reason },
        };
        let verdict = core_port::cancel_result(outcome);
        match &verdict {
            CancelResult::Unknown { reason } => self.unclear("cancel", payment_key, reason),
            other => self.journal.event(&self.host, format!("gateway cancel {payment_key}: {other:?}")),
        }
        verdict
    }
}
