//! The servers' payment-gateway client in the simulation: the core's
//! `Gateway` port over simulated HTTP to the fake gateway host.
//!
//! It speaks the real protocol with `tally-gateway`'s own request shapes,
//! reply classification (`protocol::classify_*`) and verdict mapping
//! (`core_port`), so only the transport differs from `GatewayClient`: one
//! request per connection, one timeout, never a retry. The gateway is then a
//! host like any other — it can be slow, partitioned away or crashed — and
//! the fake counts every confirm that reaches it, while this client counts
//! every confirm our servers *send* (in the journal, per order id and per
//! payment key): a confirm lost on its way is still one sent.
//!
//! # Tampering
//!
//! The fake gateway charges exactly what it is asked. Seed 003's tampering
//! case — the gateway charges our payment another amount — is injected here,
//! on the wire: for the confirms the plan picks, the request carries the
//! amount plus or minus one minor unit, while the reply is still classified
//! against what the server asked. The server then sees what a tampering
//! gateway would show it (an approval of another amount, looked up as a
//! charge of ours for another amount) and owes a refund; the gateway's books
//! show the wrong charge until it is refunded.

use std::time::Duration;

use tally_core::gateway::{CancelResult, Confirmed, Gateway, LookedUp, Verdict};
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

/// Which confirms are charged for another amount: a per-mille share,
/// picked by the order id and the seed (so a confirm's fate does not depend
/// on which server sends it or when).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tamper {
    pub seed: u64,
    pub per_mille: u64,
}

impl Tamper {
    /// The amount the gateway is asked to charge for `order_id`.
    pub fn charged(self, order_id: &str, amount: i64) -> i64 {
        if self.per_mille == 0 {
            return amount;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for byte in order_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if hash % 1000 >= self.per_mille {
            amount
        } else if (hash / 1000).is_multiple_of(2) || amount <= 1 {
            amount + 1
        } else {
            amount - 1
        }
    }
}

/// One server incarnation's gateway client.
#[derive(Clone, Debug)]
pub struct SimGateway {
    /// The server host this client runs on (for the crash bookkeeping).
    host: String,
    timeout: Duration,
    authorization: String,
    journal: Journal,
    tamper: Tamper,
}

impl SimGateway {
    pub fn new(host: &str, timeout: Duration, journal: Journal, tamper: Tamper) -> SimGateway {
        SimGateway {
            host: host.to_owned(),
            timeout,
            authorization: protocol::basic_authorization(SECRET_KEY),
            journal,
            tamper,
        }
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

    /// Journals a call's verdict (an unclear one is counted too) and hands
    /// it on.
    fn journaled<V: Verdict>(&self, call: &str, payment_key: &str, verdict: V) -> V {
        match verdict.unclear() {
            Some(reason) => {
                self.journal.count(Count::GatewayOutcomeUnknown, 1);
                self.journal.event(&self.host, format!("gateway {call} of {payment_key} unclear: {reason}"));
            }
            None => self.journal.event(&self.host, format!("gateway {call} {payment_key}: {verdict:?}")),
        }
        verdict
    }
}

impl Gateway for SimGateway {
    async fn confirm(&self, payment_key: &str, order_id: &str, amount: Amount, idempotency_key: &str) -> Confirmed {
        let sent = ConfirmBody {
            payment_key: payment_key.to_owned(),
            order_id: order_id.to_owned(),
            amount: amount.minor_units(),
        };
        let charged = self.tamper.charged(order_id, sent.amount);
        let on_the_wire = ConfirmBody { amount: charged, ..sent.clone() };
        let body = serde_json::to_vec(&on_the_wire).expect("a confirm body serialises");
        self.journal.confirm_sent(&self.host, payment_key, order_id);
        if charged == sent.amount {
            self.journal.event(&self.host, format!("gateway confirm {payment_key} for {order_id} sent"));
        } else {
            self.journal.event(
                &self.host,
                format!("gateway confirm {payment_key} for {order_id} sent (tampered: {charged} for {})", sent.amount),
            );
        }
        let outcome = match self.send("POST", protocol::CONFIRM_PATH, Some(idempotency_key), Some(body)).await {
            Ok((status, body)) => protocol::classify_confirm(&sent, status, &body),
            Err(reason) => ConfirmOutcome::Unknown { reason },
        };
        self.journaled("confirm", payment_key, core_port::confirmed(outcome))
    }

    async fn lookup(&self, payment_key: &str) -> LookedUp {
        let outcome = match self.send("GET", &protocol::payment_path(payment_key), None, None).await {
            Ok((status, body)) => protocol::classify_lookup(payment_key, status, &body),
            Err(reason) => LookupOutcome::Unknown { reason },
        };
        self.journaled("lookup", payment_key, core_port::looked_up(outcome))
    }

    async fn cancel(&self, payment_key: &str, idempotency_key: &str) -> CancelResult {
        let body = serde_json::to_vec(&CancelBody { cancel_reason: CANCEL_REASON.to_owned() })
            .expect("a cancel body serialises");
        let path = protocol::cancel_path(payment_key);
        let outcome = match self.send("POST", &path, Some(idempotency_key), Some(body)).await {
            Ok((status, body)) => protocol::classify_cancel(payment_key, status, &body),
            Err(reason) => CancelOutcome::Unknown { reason },
        };
        self.journaled("cancel", payment_key, core_port::cancel_result(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::Tamper;

    #[test]
    fn tampering_picks_its_share_of_orders_and_moves_the_amount_by_one() {
        assert_eq!(Tamper { seed: 1, per_mille: 0 }.charged("order", 1_000), 1_000);
        let tamper = Tamper { seed: 1, per_mille: 300 };
        let moved: Vec<i64> =
            (0..1_000).map(|n| tamper.charged(&format!("order-{n}"), 1_000)).filter(|&a| a != 1_000).collect();
        assert!((200..400).contains(&moved.len()), "{} of 1000 tampered", moved.len());
        assert!(moved.iter().all(|&a| a == 999 || a == 1_001));
        // The same order, the same fate, whoever sends its confirm.
        assert_eq!(tamper.charged("order-7", 1_000), tamper.charged("order-7", 1_000));
    }
}
