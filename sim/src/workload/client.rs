//! A client's life: its spec, sending a planned request (a timeout per
//! attempt, retries with the same key on a new connection, deliberate
//! duplicates), counting answers in the journal, and the other merchant
//! sharing the gateway.

use axum::http::Method;
use tally_client::{Call, Transport};

use super::ops::{body_field, next_op};
use super::*;

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
    pub catalogue: Arc<Catalogue>,
    pub orders_via_gateway: bool,
    pub racer: bool,
    pub habits: Habits,
    /// The user's `max_balance`, if it has one.
    pub max_balance: Option<i64>,
    /// The UTC boundary the run starts before, if any.
    pub boundary: Option<Timestamp>,
}

pub fn is_code(reply: &Reply, code: &str) -> bool {
    reply.status >= 400 && body_field(reply, "code").as_deref() == Some(code)
}

pub(super) fn is_in_use(reply: &Reply) -> bool {
    reply.status == 409 && is_code(reply, "idempotency_key_in_use")
}

/// An answer the client stops at: a success or a refusal it cannot change
/// by asking again.
pub fn is_final(reply: &Reply) -> bool {
    match reply.status {
        200..=299 => true,
        409 if is_in_use(reply) => false,
        429 => false,
        400..=499 => true,
        _ => false,
    }
}

/// One attempt of `planned` as client `index` (its `(op, attempt,
/// duplicate)` make the request id, so the router never draws one), with
/// the bearer key, the `Idempotency-Key` and the queue token: the request
/// the simulation and the chaos harness both send.
pub fn attempt_call(
    planned: &Planned,
    bearer: &str,
    index: usize,
    (op, attempt, duplicate): (usize, u32, bool),
    key: Option<&str>,
) -> Call {
    let request_id = format!(
        "c{}-o{op}-a{attempt}{}{}",
        index + 1,
        if planned.tab { "t" } else { "" },
        if duplicate { "d" } else { "" }
    );
    let method = Method::from_bytes(planned.method.as_bytes()).expect("the table's methods are valid");
    let mut call = Call::new(method, &planned.path)
        .header("authorization", &format!("Bearer {bearer}"))
        .header("x-request-id", &request_id);
    if let Some(key) = key {
        call = call.idempotency_key(key);
    }
    if let Some(token) = &planned.queue_token {
        call = call.header(tally_client::headers::QUEUE_TOKEN, token);
    }
    match &planned.body {
        Some(body) => call.json_bytes(body.clone()),
        None => call,
    }
}

pub(super) struct Attempt<'a> {
    spec: &'a ClientSpec,
    planned: &'a Planned,
    op: usize,
    key: Option<&'a str>,
}

/// Sends one attempt and records it.
pub(super) async fn send(
    spec: &ClientSpec,
    planned: &Planned,
    op: usize,
    key: Option<&str>,
    server: usize,
    attempt: u32,
    duplicate: bool,
) -> Result<Reply, Failure> {
    let host = server_name(server);
    let bearer = if planned.admin { crate::server::ADMIN_KEY } else { spec.api_key.as_str() };
    let call = attempt_call(planned, bearer, spec.index, (op, attempt, duplicate), key);
    spec.journal.count(Count::Requests, 1);
    let sent_at = spec.clock.now();
    let transport = net::SimTransport { host: host.clone(), timeout: spec.behaviour.attempt_timeout };
    let result = transport.send(call.to_request()).await.map(Reply::of);
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
    spec.record(planned, op, key, host, (attempt, duplicate), sent_at, answer);
    result
}

/// Runs one operation to a final answer or until the client gives up.
pub(super) async fn perform(
    attempt: Attempt<'_>,
    rng: &mut SimRng,
    duplicates: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Option<Reply> {
    let Attempt { spec, planned, op, key } = attempt;
    let home = spec.index % spec.servers;
    let mut server = home;
    let started = spec.clock.now();
    let attempts = if planned.keyed || planned.idempotent { spec.behaviour.attempts } else { 1 };
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
        if let (1, Some(tab), Some(key)) = (number, planned.second_tab(), key) {
            duplicates.push(second_tab(spec, tab, op, Planned::tab_key(key), rng));
        }
        if let (1, Some(beside), Some(key)) = (number, planned.beside.as_deref(), key) {
            spec.journal.count(Count::BesideRequests, 1);
            let (spec, beside, key) = (spec.clone(), beside.clone(), Planned::beside_key(key));
            duplicates.push(tokio::task::spawn_local(async move {
                let _ = send(&spec, &beside, op, Some(&key), server, 1, false).await;
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

/// Sends a second tab's confirm once, a moment after the first tab's, to
/// any server (the tab's own task: the client does not wait for it).
fn second_tab(
    spec: &ClientSpec,
    tab: Planned,
    op: usize,
    key: String,
    rng: &mut SimRng,
) -> tokio::task::JoinHandle<()> {
    spec.journal.count(Count::SecondTabConfirms, 1);
    let spec = spec.clone();
    let (delay, target) = (rng.millis(0, 20), rng.index(spec.servers));
    tokio::task::spawn_local(async move {
        tokio::time::sleep(delay).await;
        if let Ok(reply) = send(&spec, &tab, op, Some(&key), target, 1, false).await {
            count_tab_refusal(&spec.journal, &tab, &reply);
        }
    })
}

/// Coverage: a confirm of one of two tabs refused because the other tab's
/// payment key is being, or was, charged.
pub fn count_tab_refusal(journal: &Journal, planned: &Planned, reply: &Reply) {
    if (planned.tab || planned.second_tab.is_some()) && reply.status == 409 && is_code(reply, "invalid_state") {
        journal.count(Count::OtherTabRefused, 1);
    }
}

/// Coverage: what an operation's final answer shows about orders.
pub(super) fn count_answer(journal: &Journal, planned: &Planned, reply: &Reply) {
    let order = matches!(planned.kind, "order-products" | "order-seats");
    let count = match reply.status {
        201 if order => Some(Count::OrdersCreated),
        200 if planned.kind == "confirm"
            && body_field(reply, "order_id").is_some()
            && body_field(reply, "status").as_deref() == Some("done") =>
        {
            Some(Count::OrdersPaid)
        }
        403 if planned.kind == "order-seats" => Some(Count::Forbidden403),
        400 if planned.body.as_ref().is_some_and(|b| names_payback(b)) => Some(Count::PaybackAmountRefused),
        409 => match body_field(reply, "code").as_deref() {
            Some("out_of_stock") => Some(Count::OutOfStock),
            Some("seat_unavailable") => Some(Count::SeatUnavailable),
            Some("order_expired") => Some(Count::OrderExpired),
            Some("payment_key_in_use") => Some(Count::KeyReuseRefused),
            Some("insufficient_balance") if planned.kind == "cancel" => Some(Count::CashbackCancelRefused),
            Some("seat_limit_reached") => Some(Count::SeatLimitRefused),
            Some("max_balance_exceeded") => Some(Count::MaxBalanceRefused),
            Some("limit_exceeded") => Some(Count::LimitRefused),
            _ => None,
        },
        _ => None,
    };
    if let Some(count) = count {
        journal.count(count, 1);
    }
}

/// Whether a request body names its own `payback_amount`.
pub fn names_payback(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.get("payback_amount").is_some())
}

impl ClientSpec {
    /// The `index`th client of `plan`, acting as its user (`users`: ids and
    /// API keys, shared out round-robin), with its own fork of `root`.
    #[allow(clippy::too_many_arguments)]
    pub fn of_plan(
        plan: &crate::plan::Plan,
        index: usize,
        users: &[(UserId, String)],
        journal: &Journal,
        clock: &SimClock,
        catalogue: &Arc<Catalogue>,
        root: &SimRng,
        servers: usize,
    ) -> ClientSpec {
        let (user, api_key) = users[index % users.len()].clone();
        ClientSpec {
            index,
            user,
            api_key,
            ops: plan.ops_per_client[index],
            servers,
            behaviour: plan.client.clone(),
            rng: root.fork(100 + index as u64),
            journal: journal.clone(),
            clock: clock.clone(),
            catalogue: Arc::clone(catalogue),
            orders_via_gateway: plan.inventory.orders_via_gateway,
            racer: plan.inventory.races_expiry,
            habits: plan.adversary.habits[index],
            max_balance: plan.adversary.limits[index % users.len()].max_balance.map(|m| m.minor_units()),
            boundary: plan.adversary.calendar.boundary.map(|(_, at)| at),
        }
    }

    /// Records one attempt (its number, and whether it was a deliberate
    /// duplicate) in the history, ending now.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        planned: &Planned,
        op: usize,
        key: Option<&str>,
        host: String,
        (attempt, duplicate): (u32, bool),
        sent_at: Timestamp,
        answer: Answer,
    ) {
        self.journal.exchange(Exchange {
            client: self.index,
            user: self.user,
            op,
            kind: planned.kind,
            path: planned.path.clone(),
            body: planned.body.clone(),
            queue_token: planned.queue_token.clone(),
            key: key.map(str::to_owned),
            host,
            attempt,
            duplicate,
            sent_at,
            ended_at: self.clock.now(),
            answer,
        });
    }

    /// What the client knows before its first operation.
    pub fn initial_state(&self) -> ClientState {
        ClientState {
            catalogue: Arc::clone(&self.catalogue),
            orders_via_gateway: self.orders_via_gateway,
            racer: self.racer,
            clock: self.clock.clone(),
            habits: self.habits,
            max_balance: self.max_balance,
            boundary: self.boundary,
            ..ClientState::default()
        }
    }

    /// Ends one operation: counts its final answer (`None`: abandoned
    /// after every retry) and learns from a success.
    pub fn conclude(&self, state: &mut ClientState, kind: &OpKind, planned: &Planned, reply: Option<&Reply>) {
        let Some(reply) = reply else {
            self.journal.count(Count::OperationsAbandoned, 1);
            self.journal.event(&crate::plan::client_name(self.index), format!("gave up on {}", planned.kind));
            return;
        };
        self.journal.count(Count::OperationsCompleted, 1);
        count_answer(&self.journal, planned, reply);
        count_tab_refusal(&self.journal, planned, reply);
        if planned.races && ((200..300).contains(&reply.status) || is_code(reply, "order_expired")) {
            state.learn_race((200..300).contains(&reply.status));
        }
        if (200..300).contains(&reply.status) {
            (kind.learn)(state, planned, reply);
        } else if let Some(index) = planned.order.filter(|_| is_code(reply, "order_expired")) {
            state.orders[index].status = "expired".to_owned();
        }
        for count in state.noted.drain(..) {
            self.journal.count(count, 1);
        }
    }
}

/// The client host's software.
pub async fn client(spec: ClientSpec) -> turmoil::Result {
    let mut rng = spec.rng.clone();
    let mut state = spec.initial_state();
    let mut duplicates = Vec::new();
    for op in 0..spec.ops {
        let think = rng.millis(0, spec.behaviour.think_max_ms);
        tokio::time::sleep(think).await;
        let tag = i64::try_from(spec.index * 1000 + op).expect("small");
        let (kind, planned) = next_op(&mut state, &mut rng, op, tag);
        if planned.races {
            spec.journal.count(Count::ExpiryRaces, 1);
            spec.journal.event(
                &crate::plan::client_name(spec.index),
                format!("paying at the last moment: confirm sent {}ms after deciding to", planned.delay.as_millis()),
            );
        }
        if !planned.delay.is_zero() {
            tokio::time::sleep(planned.delay).await;
        }
        let key = planned.keyed.then(|| format!("c{}-o{op}", spec.index + 1));
        spec.journal.count(Count::Operations, 1);
        let attempt = Attempt { spec: &spec, planned: &planned, op, key: key.as_deref() };
        let began = spec.clock.elapsed();
        let reply = perform(attempt, &mut rng, &mut duplicates).await;
        if reply.is_some() {
            // Retries and backoffs only lengthen an operation: the fastest
            // one is a single round trip.
            let took = spec.clock.elapsed().saturating_sub(began);
            state.fastest_exchange = Some(state.fastest_exchange.map_or(took, |fastest| fastest.min(took)));
        }
        spec.conclude(&mut state, kind, &planned, reply.as_ref());
    }
    for duplicate in duplicates {
        let _ = duplicate.await;
    }
    Ok(())
}

/// Order ids of another merchant's charges start with this.
pub const FOREIGN_ORDER_PREFIX: &str = "elsewhere-";

/// Another merchant's checkout on the same gateway: it charges payment keys
/// our clients use (the shared pool, or one a client is about to use) for
/// orders of its own. A charge under one of our keys that is not ours must
/// never be adopted by our payment, nor refunded by us.
#[derive(Clone, Debug)]
pub struct ElsewhereSpec {
    /// When, which key, how much.
    pub charges: Vec<(Duration, String, i64)>,
    pub journal: Journal,
}

/// The other merchant's host: one confirm per charge, straight to the gateway.
pub async fn elsewhere(spec: ElsewhereSpec) -> turmoil::Result {
    use tally_gateway::protocol::{self, ConfirmBody, IDEMPOTENCY_KEY_HEADER};
    let authorization = protocol::basic_authorization(crate::gateway::SECRET_KEY);
    let mut waited = Duration::ZERO;
    for (index, (at, payment_key, amount)) in spec.charges.iter().enumerate() {
        tokio::time::sleep(at.saturating_sub(waited)).await;
        waited = waited.max(*at);
        let order_id = format!("{FOREIGN_ORDER_PREFIX}{index}");
        let body = ConfirmBody { payment_key: payment_key.clone(), order_id: order_id.clone(), amount: *amount };
        let body = serde_json::to_vec(&body).expect("a confirm body serialises");
        let headers = [("authorization", authorization.as_str()), (IDEMPOTENCY_KEY_HEADER, order_id.as_str())];
        let gateway = crate::gateway::GATEWAY_HOST;
        let request = net::request("POST", gateway, protocol::CONFIRM_PATH, &headers, Some(body));
        let answer = match net::exchange(gateway, request, Duration::from_secs(1)).await {
            Ok(reply) => format!("{}", reply.status),
            Err(failure) => failure.to_string(),
        };
        spec.journal.event("elsewhere", format!("charged {payment_key} for {order_id} ({amount}): {answer}"));
    }
    Ok(())
}
