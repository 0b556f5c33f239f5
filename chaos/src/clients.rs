//! The clients: the simulation's workload (its operation table, drawn by
//! `tally_sim::workload::next_op`, and what a client learns from each
//! answer) sent over real HTTP to the real instances, with the simulation's
//! client behaviour — a timeout per attempt, retries with the same
//! `Idempotency-Key`, sometimes to another instance, and duplicates sent
//! while the first is still in flight. Every attempt is recorded in the
//! simulation's [`Journal`] as an [`Exchange`], the history the oracle reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tally_client::{Client, ReqwestTransport};
use tally_core::time::Clock;
use tally_sim::journal::{Answer, Count};
use tally_sim::net::{Failure, Reply};
use tally_sim::plan::{server_name, timing};
use tally_sim::rng::SimRng;
use tally_sim::workload::{self, ClientSpec, Planned};

/// What every client of one run shares.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The instances, by index, through the typed client over reqwest.
    pub servers: Arc<Vec<Client<ReqwestTransport>>>,
    pub admin_key: String,
    pub progress: ProgressBar,
    /// Past it, clients start no new operation (`--time-budget`).
    pub deadline: Instant,
    /// Set when a client stopped early for the deadline.
    pub cut_short: Arc<AtomicBool>,
}

/// One attempt of one operation.
struct Attempt<'a> {
    spec: &'a ClientSpec,
    shared: &'a Shared,
    planned: &'a Planned,
    op: usize,
    key: Option<&'a str>,
}

impl Attempt<'_> {
    /// Sends to instance `server` and records the exchange.
    async fn send(&self, server: usize, attempt: u32, duplicate: bool) -> Result<Reply, Failure> {
        let Attempt { spec, shared, planned, op, key } = *self;
        let bearer = if planned.admin { shared.admin_key.as_str() } else { spec.api_key.as_str() };
        let call = workload::attempt_call(planned, bearer, spec.index, (op, attempt, duplicate), key);
        let client = shared.servers[server].clone().with_attempt_timeout(spec.behaviour.attempt_timeout);
        spec.journal.count(Count::Requests, 1);
        let sent_at = spec.clock.now();
        let result = client.exchange(&call).await.map(Reply::of);
        match &result {
            Ok(reply) if reply.replayed => spec.journal.count(Count::ReplaysServed, 1),
            Ok(reply) if reply.status == 409 && workload::is_code(reply, "idempotency_key_in_use") => {
                spec.journal.count(Count::DuplicateInFlight409, 1);
            }
            Err(Failure::TimedOut) => spec.journal.count(Count::AttemptTimeouts, 1),
            _ => {}
        }
        let answer = match &result {
            Ok(reply) => Answer::Reply { status: reply.status, body: reply.body.clone(), replayed: reply.replayed },
            Err(failure) => Answer::Failed(failure.to_string()),
        };
        spec.record(planned, op, key, server_name(server), (attempt, duplicate), sent_at, answer);
        result
    }
}

/// Runs one operation to a final answer or until the client gives up, as
/// the simulation's client does.
async fn perform(attempt: &Attempt<'_>, rng: &mut SimRng) -> Option<Reply> {
    let spec = attempt.spec;
    let servers = attempt.shared.servers.len();
    let mut server = spec.index % servers;
    let started = Instant::now();
    let planned = attempt.planned;
    let attempts = if planned.keyed || planned.idempotent { spec.behaviour.attempts } else { 1 };
    for number in 1..=attempts {
        if number > 1 {
            if started.elapsed() > timing::KEY_AGE_MAX {
                break;
            }
            if servers > 1 && rng.chance(spec.behaviour.switch_per_mille) {
                server = (server + 1 + rng.index(servers - 1)) % servers;
                spec.journal.count(Count::RetriesToAnotherHost, 1);
            }
        }
        let duplicate = (number == 1 && planned.keyed && rng.chance(spec.behaviour.duplicate_per_mille))
            .then(|| (rng.millis(0, 20), rng.index(servers)));
        // The second tab's confirm, sent once beside the first attempt.
        let tab = (number == 1).then(|| planned.second_tab().zip(attempt.key.map(Planned::tab_key))).flatten();
        let tab = tab.map(|(planned, key)| (planned, key, rng.millis(0, 20), rng.index(servers)));
        let second_tab = async {
            let Some((planned, key, delay, target)) = &tab else { return };
            spec.journal.count(Count::SecondTabConfirms, 1);
            tokio::time::sleep(*delay).await;
            let tab = Attempt { planned, key: Some(key), ..*attempt };
            if let Ok(reply) = tab.send(*target, 1, false).await {
                workload::count_tab_refusal(&spec.journal, planned, &reply);
            }
        };
        let first = attempt.send(server, number, false);
        let reply = match duplicate {
            Some((delay, target)) => {
                spec.journal.count(Count::DuplicatesSent, 1);
                let second = async {
                    tokio::time::sleep(delay).await;
                    let _ = attempt.send(target, 1, true).await;
                };
                tokio::join!(first, second, second_tab).0
            }
            None => tokio::join!(first, second_tab).0,
        };
        if let Ok(reply) = reply
            && workload::is_final(&reply)
        {
            return Some(reply);
        }
        let base = spec.behaviour.backoff.saturating_mul(1 << (number - 1).min(4)).min(Duration::from_secs(2));
        let jitter = rng.millis(0, u64::try_from(base.as_millis()).unwrap_or(0) / 2);
        tokio::time::sleep(base + jitter).await;
    }
    None
}

/// One client's life: `spec.ops` operations, like the simulation's client.
pub async fn client(spec: ClientSpec, shared: Shared) {
    let mut rng = spec.rng.clone();
    let mut state = spec.initial_state();
    for op in 0..spec.ops {
        if Instant::now() > shared.deadline {
            shared.cut_short.store(true, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(rng.millis(0, spec.behaviour.think_max_ms)).await;
        let tag = i64::try_from(spec.index * 1000 + op).expect("small");
        let (kind, planned) = workload::next_op(&mut state, &mut rng, op, tag);
        if planned.races {
            spec.journal.count(Count::ExpiryRaces, 1);
        }
        if !planned.delay.is_zero() {
            tokio::time::sleep(planned.delay).await;
        }
        let key = planned.keyed.then(|| format!("c{}-o{op}", spec.index + 1));
        spec.journal.count(Count::Operations, 1);
        let attempt = Attempt { spec: &spec, shared: &shared, planned: &planned, op, key: key.as_deref() };
        let reply = perform(&attempt, &mut rng).await;
        spec.conclude(&mut state, kind, &planned, reply.as_ref());
        shared.progress.inc(1);
    }
}
