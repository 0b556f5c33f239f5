//! The clients: what they ask for (a table of operation kinds) and how they
//! ask (like real clients: a timeout per attempt, retries with the same
//! `Idempotency-Key` on a new connection, sometimes to another server,
//! sometimes a deliberate duplicate while the first is still in flight).
//!
//! # The operation table
//!
//! [`OPS`] lists every kind of operation with a weight, a `build` that turns
//! the client's state into a request (or declines, when the client has
//! nothing to act on yet), and a `learn` that updates the state from a
//! success. Orders for stock and seats and queue tokens are rows to add
//! here when the API has them; the client loop does not change.
//!
//! # Amount tags
//!
//! Every money amount a client sends ends in a tag (`client * 1000 + op`)
//! below [`TAG_SPACE`], unique within the run. The oracle reads it back from
//! the ledger: two top-ups with one tag are one request taking effect twice.

use std::time::Duration;

use tally_core::ids::UserId;
use tally_core::time::Clock;

use crate::clock::SimClock;
use crate::journal::{Answer, Count, Exchange, Journal};
use crate::net::{self, Failure, Reply};
use crate::plan::{ClientBehaviour, server_name, timing};
use crate::rng::SimRng;

/// Amounts are `units * TAG_SPACE + tag`.
pub const TAG_SPACE: i64 = 100_000;

/// A payment the client created.
#[derive(Clone, Debug)]
pub struct Known {
    pub id: String,
    pub gateway: bool,
    pub payment_key: String,
    pub status: String,
}

/// What one client knows.
#[derive(Clone, Debug, Default)]
pub struct ClientState {
    pub payments: Vec<Known>,
}

/// A request an operation wants sent.
#[derive(Clone, Debug)]
pub struct Planned {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// Money and inventory moves carry an `Idempotency-Key` and are retried.
    pub keyed: bool,
    /// The payment (index into `ClientState::payments`) this acts on.
    pub payment: Option<usize>,
    /// For a new gateway payment: its payment key.
    pub payment_key: Option<String>,
}

/// One row of the operation table.
#[derive(Debug)]
pub struct OpKind {
    pub name: &'static str,
    pub weight: u64,
    pub build: fn(&ClientState, &mut SimRng, i64) -> Option<Planned>,
    pub learn: fn(&mut ClientState, &Planned, &Reply),
}

fn json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

fn post(kind: &'static str, path: String, body: serde_json::Value) -> Planned {
    Planned { kind, method: "POST", path, body: Some(json(&body)), keyed: true, payment: None, payment_key: None }
}

fn tagged(rng: &mut SimRng, max_units: u64, tag: i64) -> i64 {
    i64::try_from(rng.range(1, max_units)).expect("small") * TAG_SPACE + tag
}

fn build_top_up(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(post("top-up", "/v1/wallet/top-ups".into(), serde_json::json!({ "amount": tagged(rng, 40, tag) })))
}

fn build_payment(gateway: bool, rng: &mut SimRng, tag: i64) -> Planned {
    let amount = tagged(rng, 12, tag);
    let mut body = serde_json::json!({ "amount": amount, "method": if gateway { "gateway" } else { "wallet" } });
    if rng.chance(300) {
        body["payback_amount"] = serde_json::json!(amount / 10);
    }
    let mut planned = post(if gateway { "pay-gateway" } else { "pay-wallet" }, "/v1/payments".into(), body);
    planned.payment_key = gateway.then(|| format!("pk-{tag}"));
    planned
}

fn build_pay_wallet(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(build_payment(false, rng, tag))
}

fn build_pay_gateway(_: &ClientState, rng: &mut SimRng, tag: i64) -> Option<Planned> {
    Some(build_payment(true, rng, tag))
}

/// A payment to act on: mostly one still waiting, sometimes any.
fn choose(state: &ClientState, rng: &mut SimRng) -> Option<usize> {
    let waiting: Vec<usize> = (0..state.payments.len()).filter(|&i| state.payments[i].status == "wait").collect();
    if !waiting.is_empty() && rng.chance(750) {
        return Some(*rng.pick(&waiting));
    }
    (!state.payments.is_empty()).then(|| rng.index(state.payments.len()))
}

fn build_confirm(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = choose(state, rng)?;
    let known = &state.payments[index];
    let body =
        if known.gateway { serde_json::json!({ "payment_key": known.payment_key }) } else { serde_json::json!({}) };
    let mut planned = post("confirm", format!("/v1/payments/{}/confirm", known.id), body);
    planned.payment = Some(index);
    Some(planned)
}

fn build_cancel(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    // Any payment, also one already cancelled: cancelling twice must refund once.
    let index = (!state.payments.is_empty()).then(|| rng.index(state.payments.len()))?;
    let mut planned =
        post("cancel", format!("/v1/payments/{}/cancel", state.payments[index].id), serde_json::json!({}));
    planned.payment = Some(index);
    Some(planned)
}

fn build_read(state: &ClientState, rng: &mut SimRng, _: i64) -> Option<Planned> {
    let index = (!state.payments.is_empty()).then(|| rng.index(state.payments.len()))?;
    Some(Planned {
        kind: "read-payment",
        method: "GET",
        path: format!("/v1/payments/{}", state.payments[index].id),
        body: None,
        keyed: false,
        payment: Some(index),
        payment_key: None,
    })
}

fn body_field(reply: &Reply, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    value.get(field).and_then(|v| v.as_str()).map(str::to_owned)
}

fn learn_nothing(_: &mut ClientState, _: &Planned, _: &Reply) {}

fn learn_payment(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    let (Some(id), Some(status)) = (body_field(reply, "id"), body_field(reply, "status")) else { return };
    state.payments.push(Known {
        id,
        gateway: planned.payment_key.is_some(),
        payment_key: planned.payment_key.clone().unwrap_or_default(),
        status,
    });
}

fn learn_status(state: &mut ClientState, planned: &Planned, reply: &Reply) {
    if let (Some(index), Some(status)) = (planned.payment, body_field(reply, "status")) {
        state.payments[index].status = status;
    }
}

/// Every kind of operation the clients perform, with its weight.
pub const OPS: &[OpKind] = &[
    OpKind { name: "top-up", weight: 3, build: build_top_up, learn: learn_nothing },
    OpKind { name: "pay-wallet", weight: 3, build: build_pay_wallet, learn: learn_payment },
    OpKind { name: "pay-gateway", weight: 2, build: build_pay_gateway, learn: learn_payment },
    OpKind { name: "confirm", weight: 5, build: build_confirm, learn: learn_status },
    OpKind { name: "cancel", weight: 2, build: build_cancel, learn: learn_status },
    OpKind { name: "read-payment", weight: 1, build: build_read, learn: learn_status },
];

/// Draws the next operation: the first one funds the wallet; a kind that
/// has nothing to act on yet is drawn again.
fn next_op(state: &ClientState, rng: &mut SimRng, op: usize, tag: i64) -> (&'static OpKind, Planned) {
    if op == 0 {
        let kind = &OPS[0];
        return (kind, (kind.build)(state, rng, tag).expect("a top-up is always possible"));
    }
    let total: u64 = OPS.iter().map(|k| k.weight).sum();
    loop {
        let mut draw = rng.below(total);
        let kind = OPS.iter().find(|k| {
            let hit = draw < k.weight;
            draw = draw.saturating_sub(k.weight);
            hit
        });
        let kind = kind.expect("the draw is below the total weight");
        if let Some(planned) = (kind.build)(state, rng, tag) {
            return (kind, planned);
        }
    }
}

/// One client host's inputs.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub index: usize,
    pub user: UserId,
    pub api_key: String,
    pub ops: usize,
    pub servers: usize,
    pub behaviour: ClientBehaviour,
    pub rng: SimRng,
    pub journal: Journal,
    pub clock: SimClock,
}

fn is_in_use(reply: &Reply) -> bool {
    reply.status == 409 && body_field(reply, "code").as_deref() == Some("idempotency_key_in_use")
}

/// An answer the client stops at: a success or a refusal it cannot change
/// by asking again.
fn is_final(reply: &Reply) -> bool {
    match reply.status {
        200..=299 => true,
        409 if is_in_use(reply) => false,
        429 => false,
        400..=499 => true,
        _ => false,
    }
}

struct Attempt<'a> {
    spec: &'a ClientSpec,
    planned: &'a Planned,
    op: usize,
    key: Option<&'a str>,
}

/// Sends one attempt and records it.
async fn send(
    spec: &ClientSpec,
    planned: &Planned,
    op: usize,
    key: Option<&str>,
    server: usize,
    attempt: u32,
    duplicate: bool,
) -> Result<Reply, Failure> {
    let host = server_name(server);
    let bearer = format!("Bearer {}", spec.api_key);
    let request_id = format!("c{}-o{op}-a{attempt}{}", spec.index + 1, if duplicate { "d" } else { "" });
    let mut headers = vec![("authorization", bearer.as_str()), ("x-request-id", request_id.as_str())];
    headers.extend(key.map(|key| ("idempotency-key", key)));
    let request = net::request(planned.method, &host, &planned.path, &headers, planned.body.clone());
    spec.journal.count(Count::Requests, 1);
    let result = net::exchange(&host, request, spec.behaviour.attempt_timeout).await;
    let who = crate::plan::client_name(spec.index);
    let label = format!(
        "{} {} → {host} [{}{}]",
        planned.method,
        planned.path,
        key.unwrap_or("-"),
        if duplicate { " dup".to_owned() } else { format!(" #{attempt}") }
    );
    let answer = match &result {
        Ok(reply) => {
            if reply.replayed {
                spec.journal.count(Count::ReplaysServed, 1);
                if reply.status >= 400 {
                    spec.journal.count(Count::RefusalsReplayed, 1);
                }
            }
            if is_in_use(reply) {
                spec.journal.count(Count::DuplicateInFlight409, 1);
            }
            let body = String::from_utf8_lossy(&reply.body);
            let shown: String = body.chars().take(160).collect();
            spec.journal.event(
                &who,
                format!("{label}: {}{} {shown}", reply.status, if reply.replayed { " (replayed)" } else { "" }),
            );
            Answer::Reply { status: reply.status, body: reply.body.clone(), replayed: reply.replayed }
        }
        Err(failure) => {
            if *failure == Failure::TimedOut {
                spec.journal.count(Count::AttemptTimeouts, 1);
            }
            spec.journal.event(&who, format!("{label}: no answer ({failure})"));
            Answer::Failed(failure.to_string())
        }
    };
    spec.journal.exchange(Exchange {
        client: spec.index,
        user: spec.user,
        op,
        kind: planned.kind,
        key: key.map(str::to_owned),
        host,
        attempt,
        duplicate,
        answer,
    });
    result
}

/// Runs one operation to a final answer or until the client gives up.
async fn perform(
    attempt: Attempt<'_>,
    rng: &mut SimRng,
    duplicates: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Option<Reply> {
    let Attempt { spec, planned, op, key } = attempt;
    let home = spec.index % spec.servers;
    let mut server = home;
    let started = spec.clock.now();
    let attempts = if planned.keyed { spec.behaviour.attempts } else { 1 };
    for number in 1..=attempts {
        if number > 1 {
            let age = u64::try_from(spec.clock.now().0 - started.0).unwrap_or(0);
            if Duration::from_millis(age) > timing::KEY_AGE_MAX {
                break;
            }
            if spec.servers > 1 && rng.chance(spec.behaviour.switch_per_mille) {
                server = (server + 1 + rng.index(spec.servers - 1)) % spec.servers;
                spec.journal.count(Count::RetriesToAnotherHost, 1);
            }
        }
        if number == 1 && planned.keyed && rng.chance(spec.behaviour.duplicate_per_mille) {
            spec.journal.count(Count::DuplicatesSent, 1);
            let (spec, planned, key) = (spec.clone(), planned.clone(), key.map(str::to_owned));
            let delay = rng.millis(0, 20);
            let target = rng.index(spec.servers);
            duplicates.push(tokio::task::spawn_local(async move {
                tokio::time::sleep(delay).await;
                let _ = send(&spec, &planned, op, key.as_deref(), target, 1, true).await;
            }));
        }
        if let Ok(reply) = send(spec, planned, op, key, server, number, false).await
            && is_final(&reply)
        {
            return Some(reply);
        }
        // Exponential backoff, capped, with jitter.
        let base = spec.behaviour.backoff.saturating_mul(1 << (number - 1).min(4)).min(Duration::from_secs(2));
        let jitter = rng.millis(0, u64::try_from(base.as_millis()).unwrap_or(0) / 2);
        tokio::time::sleep(base + jitter).await;
    }
    None
}

/// The client host's software.
pub async fn client(spec: ClientSpec) -> turmoil::Result {
    let mut rng = spec.rng.clone();
    let mut state = ClientState::default();
    let mut duplicates = Vec::new();
    for op in 0..spec.ops {
        let think = rng.millis(0, spec.behaviour.think_max_ms);
        tokio::time::sleep(think).await;
        let tag = i64::try_from(spec.index * 1000 + op).expect("small");
        let (kind, planned) = next_op(&state, &mut rng, op, tag);
        let key = planned.keyed.then(|| format!("c{}-o{op}", spec.index + 1));
        spec.journal.count(Count::Operations, 1);
        let attempt = Attempt { spec: &spec, planned: &planned, op, key: key.as_deref() };
        match perform(attempt, &mut rng, &mut duplicates).await {
            Some(reply) => {
                spec.journal.count(Count::OperationsCompleted, 1);
                if (200..300).contains(&reply.status) {
                    (kind.learn)(&mut state, &planned, &reply);
                }
            }
            None => {
                spec.journal.count(Count::OperationsAbandoned, 1);
                spec.journal.event(&crate::plan::client_name(spec.index), format!("gave up on {}", planned.kind));
            }
        }
    }
    for duplicate in duplicates {
        let _ = duplicate.await;
    }
    Ok(())
}
