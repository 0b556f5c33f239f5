//! The fake gateway's [`FaultPlan`]: which failures it injects, when, and
//! how often they fired.
//!
//! Every fault is a rule with a [`Trigger`] (the next N matching calls, each
//! call with a probability, or always) and, for request-level faults, the
//! [`Endpoints`] it applies to. Probabilities draw from one RNG seeded by the
//! plan's seed, in the order requests arrive, so a run whose calls arrive in
//! the same order (sequential calls, or a deterministic simulation) makes the
//! same decisions. No global or OS randomness is used.
//!
//! The plan can be changed at run time through the handle (tests) or, as a
//! whole [`FaultConfig`], through the fake's `POST /__faults` (another process).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// When a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// On each of the next N matching calls, then never (JSON `{"next": 3}`).
    Next(u32),
    /// On each matching call with this probability, drawn from the plan's
    /// seeded RNG (JSON `{"probability": 0.25}`). Outside 0..=1 is clamped;
    /// NaN is 0.
    Probability(f64),
    /// On every matching call (JSON `"always"`).
    Always,
}

impl Trigger {
    fn fires(&mut self, rng: &mut StdRng) -> bool {
        match self {
            Self::Next(0) => false,
            Self::Next(n) => {
                *n -= 1;
                true
            }
            Self::Probability(p) => rng.random_bool(if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }),
            Self::Always => true,
        }
    }

    fn is_valid(self) -> bool {
        match self {
            Self::Probability(p) => (0.0..=1.0).contains(&p),
            Self::Next(_) | Self::Always => true,
        }
    }
}

/// One of the gateway's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Confirm,
    Lookup,
    Cancel,
}

/// The endpoints a rule applies to; JSON is a list such as
/// `["confirm", "lookup"]`. The default is confirm and cancel, the calls
/// with effects, so that a test can still look a payment up to see what a
/// fault did; name `lookup` to fault lookups too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Endpoint>", into = "Vec<Endpoint>")]
pub struct Endpoints {
    pub confirm: bool,
    pub lookup: bool,
    pub cancel: bool,
}

impl Endpoints {
    pub const ALL: Self = Self { confirm: true, lookup: true, cancel: true };

    pub fn contains(self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Confirm => self.confirm,
            Endpoint::Lookup => self.lookup,
            Endpoint::Cancel => self.cancel,
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self { confirm: true, lookup: false, cancel: true }
    }
}

impl From<Vec<Endpoint>> for Endpoints {
    fn from(list: Vec<Endpoint>) -> Self {
        Self::from(list.as_slice())
    }
}

impl From<&[Endpoint]> for Endpoints {
    fn from(list: &[Endpoint]) -> Self {
        Self {
            confirm: list.contains(&Endpoint::Confirm),
            lookup: list.contains(&Endpoint::Lookup),
            cancel: list.contains(&Endpoint::Cancel),
        }
    }
}

impl From<Endpoints> for Vec<Endpoint> {
    fn from(set: Endpoints) -> Self {
        [Endpoint::Confirm, Endpoint::Lookup, Endpoint::Cancel].into_iter().filter(|&e| set.contains(e)).collect()
    }
}

/// A fault with no parameters of its own (`lose_reply_after_commit`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub when: Trigger,
    #[serde(default)]
    pub on: Endpoints,
}

impl FaultRule {
    /// Confirm and cancel, when `when` fires.
    pub fn new(when: Trigger) -> Self {
        Self { when, on: Endpoints::default() }
    }

    pub fn on(mut self, endpoints: &[Endpoint]) -> Self {
        self.on = endpoints.into();
        self
    }
}

/// A fault that answers with a 5xx status (`fail_5xx`, `fail_5xx_after_commit`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    pub when: Trigger,
    #[serde(default)]
    pub on: Endpoints,
    /// The status to answer; default 503 before a commit, 500 after one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl ErrorFault {
    pub fn new(when: Trigger) -> Self {
        Self { when, on: Endpoints::default(), status: None }
    }

    pub fn on(mut self, endpoints: &[Endpoint]) -> Self {
        self.on = endpoints.into();
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// Delay before the gateway starts processing a request.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyFault {
    pub min_ms: u64,
    pub max_ms: u64,
    pub when: Trigger,
    #[serde(default)]
    pub on: Endpoints,
}

impl LatencyFault {
    /// Always exactly `delay`.
    pub fn fixed(delay: Duration) -> Self {
        Self::range(delay, delay)
    }

    /// Always, uniformly within `min..=max` (whole milliseconds).
    pub fn range(min: Duration, max: Duration) -> Self {
        Self { min_ms: millis(min), max_ms: millis(max), when: Trigger::Always, on: Endpoints::default() }
    }

    pub fn when(mut self, when: Trigger) -> Self {
        self.when = when;
        self
    }

    pub fn on(mut self, endpoints: &[Endpoint]) -> Self {
        self.on = endpoints.into();
        self
    }
}

/// A whole fault plan, as `POST /__faults` takes it and `GET /__faults`
/// shows it (with `next` counts as they stand). Absent fields are off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Reseed the RNG. Absent: keep the current RNG and its position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Sleep before processing. The processing itself then runs whether or
    /// not the client is still waiting, as on a real gateway.
    pub latency: Option<LatencyFault>,
    /// Answer a 5xx without processing the request.
    pub fail_5xx: Option<ErrorFault>,
    /// Process the request (the charge or refund is committed), then answer
    /// a 5xx. Consulted only for requests that took effect.
    pub fail_5xx_after_commit: Option<ErrorFault>,
    /// Process the request, then close the connection without answering.
    /// Consulted only for requests that took effect.
    pub lose_reply_after_commit: Option<FaultRule>,
    /// Accept the next connections and close them before reading a byte.
    /// Counts connections, which is calls: the fake serves one request per
    /// connection.
    pub drop_connections: Option<Trigger>,
    /// Refuse every connection for this many milliseconds from now. Over
    /// HTTP a refusal must end by itself, or the admin could not lift it.
    pub refuse_connections_ms: Option<u64>,
}

impl FaultConfig {
    /// Why the plan is nonsensical, if it is.
    pub fn validate(&self) -> Result<(), String> {
        let triggers = [
            self.latency.map(|l| l.when),
            self.fail_5xx.map(|f| f.when),
            self.fail_5xx_after_commit.map(|f| f.when),
            self.lose_reply_after_commit.map(|f| f.when),
            self.drop_connections,
        ];
        if !triggers.into_iter().flatten().all(Trigger::is_valid) {
            return Err("a probability must be within 0..=1".into());
        }
        if let Some(latency) = self.latency
            && latency.min_ms > latency.max_ms
        {
            return Err("latency min_ms must not exceed max_ms".into());
        }
        let mut statuses = [self.fail_5xx, self.fail_5xx_after_commit].into_iter().flatten().filter_map(|f| f.status);
        if statuses.any(|s| !(500..=599).contains(&s)) {
            return Err("a fault status must be 5xx".into());
        }
        Ok(())
    }
}

/// How often each fault fired since the fake started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    pub latency: u64,
    pub fail_5xx: u64,
    pub fail_5xx_after_commit: u64,
    pub lose_reply_after_commit: u64,
    pub dropped_connections: u64,
    /// Connections accepted and closed while refusing. A listener that was
    /// really closed refuses in the kernel, where nothing can count.
    pub refused_connections: u64,
}

/// Whether connections are being refused, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Off,
    UntilResumed,
    Until(Instant),
}

impl Refusal {
    fn is_active(self) -> bool {
        match self {
            Self::Off => false,
            Self::UntilResumed => true,
            Self::Until(end) => Instant::now() < end,
        }
    }
}

/// What to do with a request before processing it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Before {
    pub delay: Option<Duration>,
    pub fail_status: Option<u16>,
}

/// What to do with a request that took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterCommit {
    Reply,
    Fail(u16),
    LoseReply,
}

/// The fake gateway's fault plan; shared through an `Arc` between the
/// handle, the admin endpoint and the server.
pub struct FaultPlan {
    state: Mutex<PlanState>,
    // A watch rather than a field so the accept loop wakes when a refusal
    // starts or ends, instead of polling.
    refusal: watch::Sender<Refusal>,
}

struct PlanState {
    seed: u64,
    rng: StdRng,
    config: FaultConfig,
    counters: FaultCounters,
    /// Confirms received and waiting out an injected latency: not charged
    /// yet, and charged once the wait ends, whatever the caller did since.
    confirms_delayed: u64,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FaultPlan")
            .field("seed", &state.seed)
            .field("config", &state.config)
            .field("counters", &state.counters)
            .field("refusal", &*self.refusal.borrow())
            .finish()
    }
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::new(0)
    }
}

impl FaultPlan {
    /// No faults; probabilities will draw from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(PlanState {
                seed,
                rng: StdRng::seed_from_u64(seed),
                config: FaultConfig::default(),
                counters: FaultCounters::default(),
                confirms_delayed: 0,
            }),
            refusal: watch::Sender::new(Refusal::Off),
        }
    }

    /// Restart the RNG from `seed`.
    pub fn reseed(&self, seed: u64) {
        let mut state = self.lock();
        state.seed = seed;
        state.rng = StdRng::seed_from_u64(seed);
    }

    /// How many confirms are waiting out an injected latency right now:
    /// received, not charged yet. A test (the simulation's late clock step)
    /// acts while one is, to make the charge land after its caller gave up.
    pub fn confirms_delayed_now(&self) -> u64 {
        self.lock().confirms_delayed
    }

    /// Counts a confirm waiting out its latency until the guard drops.
    pub(crate) fn delaying(self: &Arc<Self>, endpoint: Endpoint) -> Delaying {
        let confirm = endpoint == Endpoint::Confirm;
        if confirm {
            self.lock().confirms_delayed += 1;
        }
        Delaying { plan: Arc::clone(self), confirm }
    }

    pub fn set_latency(&self, latency: Option<LatencyFault>) {
        self.lock().config.latency = latency;
    }

    pub fn set_fail_5xx(&self, fault: Option<ErrorFault>) {
        self.lock().config.fail_5xx = fault;
    }

    pub fn set_fail_5xx_after_commit(&self, fault: Option<ErrorFault>) {
        self.lock().config.fail_5xx_after_commit = fault;
    }

    pub fn set_lose_reply_after_commit(&self, fault: Option<FaultRule>) {
        self.lock().config.lose_reply_after_commit = fault;
    }

    pub fn set_drop_connections(&self, trigger: Option<Trigger>) {
        self.lock().config.drop_connections = trigger;
    }

    /// Refuse connections for `duration`, or until [`resume_connections`]
    /// if `None`. Served by [`serve`](super::serve), the listening socket is
    /// closed (clients get "connection refused") and bound again afterwards;
    /// served by [`serve_on`](super::serve_on), connections are accepted and
    /// closed at once. Either way no request gets through, starting now.
    ///
    /// [`resume_connections`]: Self::resume_connections
    pub fn refuse_connections(&self, duration: Option<Duration>) {
        let refusal = match duration {
            None => Refusal::UntilResumed,
            Some(d) => Refusal::Until(Instant::now() + d),
        };
        self.refusal.send_replace(refusal);
    }

    pub fn resume_connections(&self) {
        self.refusal.send_replace(Refusal::Off);
    }

    /// Whether connections are refused right now.
    pub fn is_refusing(&self) -> bool {
        self.refusal.borrow().is_active()
    }

    /// Replace the whole plan (what `POST /__faults` does). Counters stay.
    pub fn apply(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        let refuse = config.refuse_connections_ms;
        {
            let mut state = self.lock();
            if let Some(seed) = config.seed {
                state.seed = seed;
                state.rng = StdRng::seed_from_u64(seed);
            }
            state.config = FaultConfig { seed: None, refuse_connections_ms: None, ..config };
        }
        match refuse {
            Some(ms) => self.refuse_connections(Some(Duration::from_millis(ms))),
            None => self.resume_connections(),
        }
        Ok(())
    }

    /// No faults at all (the RNG keeps its position).
    pub fn clear(&self) {
        self.lock().config = FaultConfig::default();
        self.resume_connections();
    }

    /// The plan as it stands, in the shape `apply` takes.
    pub fn snapshot(&self) -> FaultConfig {
        let state = self.lock();
        let refuse_connections_ms = match *self.refusal.borrow() {
            Refusal::Off => None,
            // Shown as "a long time": it lasts until the handle lifts it.
            Refusal::UntilResumed => Some(u64::MAX),
            Refusal::Until(end) => Some(millis(end.saturating_duration_since(Instant::now()))).filter(|&ms| ms > 0),
        };
        FaultConfig { seed: Some(state.seed), refuse_connections_ms, ..state.config.clone() }
    }

    pub fn counters(&self) -> FaultCounters {
        self.lock().counters
    }

    // ---- decisions, made by the server ----

    /// Latency and `fail_5xx` for a request that just arrived. Drawn in this
    /// fixed order so a seed replays the same decisions.
    pub(crate) fn before(&self, endpoint: Endpoint) -> Before {
        let mut guard = self.lock();
        let PlanState { rng, config, counters, .. } = &mut *guard;
        let mut decision = Before::default();
        if let Some(latency) = config.latency.as_mut().filter(|l| l.on.contains(endpoint))
            && latency.when.fires(rng)
        {
            let ms = if latency.min_ms < latency.max_ms {
                rng.random_range(latency.min_ms..=latency.max_ms)
            } else {
                latency.min_ms
            };
            counters.latency += 1;
            decision.delay = Some(Duration::from_millis(ms));
        }
        if let Some(fault) = config.fail_5xx.as_mut().filter(|f| f.on.contains(endpoint))
            && fault.when.fires(rng)
        {
            counters.fail_5xx += 1;
            decision.fail_status = Some(server_error(fault.status, 503));
        }
        decision
    }

    /// What to do with a request that has just taken effect. Losing the
    /// reply is decided first and wins.
    pub(crate) fn after_commit(&self, endpoint: Endpoint) -> AfterCommit {
        let mut guard = self.lock();
        let PlanState { rng, config, counters, .. } = &mut *guard;
        if let Some(rule) = config.lose_reply_after_commit.as_mut().filter(|r| r.on.contains(endpoint))
            && rule.when.fires(rng)
        {
            counters.lose_reply_after_commit += 1;
            return AfterCommit::LoseReply;
        }
        if let Some(fault) = config.fail_5xx_after_commit.as_mut().filter(|f| f.on.contains(endpoint))
            && fault.when.fires(rng)
        {
            counters.fail_5xx_after_commit += 1;
            return AfterCommit::Fail(server_error(fault.status, 500));
        }
        AfterCommit::Reply
    }

    /// Whether to serve a connection that was just accepted.
    pub(crate) fn admit_connection(&self) -> bool {
        let refusing = self.is_refusing();
        let mut guard = self.lock();
        let PlanState { rng, config, counters, .. } = &mut *guard;
        if refusing {
            counters.refused_connections += 1;
            return false;
        }
        if let Some(trigger) = config.drop_connections.as_mut()
            && trigger.fires(rng)
        {
            counters.dropped_connections += 1;
            return false;
        }
        true
    }

    pub(crate) fn watch_refusal(&self) -> watch::Receiver<Refusal> {
        self.refusal.subscribe()
    }

    /// When a timed refusal ends, if one is still running (a deadline in the
    /// past is none, or the accept loop would wake for it forever).
    pub(crate) fn refusal_deadline(&self) -> Option<Instant> {
        match *self.refusal.borrow() {
            Refusal::Until(end) if end > Instant::now() => Some(end),
            Refusal::Until(_) | Refusal::Off | Refusal::UntilResumed => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanState> {
        // A panic elsewhere cannot leave the plan half-updated in a way that
        // matters to a fake; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn server_error(configured: Option<u16>, default: u16) -> u16 {
    configured.filter(|s| (500..=599).contains(s)).unwrap_or(default)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request waiting out its injected latency (see [`FaultPlan::delaying`]).
pub(crate) struct Delaying {
    plan: Arc<FaultPlan>,
    confirm: bool,
}

impl Drop for Delaying {
    fn drop(&mut self) {
        if self.confirm {
            let mut state = self.plan.lock();
            state.confirms_delayed = state.confirms_delayed.checked_sub(1).expect("one count per delayed confirm");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_fires_exactly_n_times() {
        let plan = FaultPlan::new(1);
        plan.set_fail_5xx(Some(ErrorFault::new(Trigger::Next(2))));
        let fired: Vec<bool> = (0..4).map(|_| plan.before(Endpoint::Confirm).fail_status.is_some()).collect();
        assert_eq!(fired, [true, true, false, false]);
        assert_eq!(plan.counters().fail_5xx, 2);
    }

    #[test]
    fn endpoints_filter_rules() {
        let plan = FaultPlan::new(1);
        plan.set_fail_5xx(Some(ErrorFault::new(Trigger::Always)));
        assert!(plan.before(Endpoint::Lookup).fail_status.is_none());
        assert_eq!(plan.before(Endpoint::Cancel).fail_status, Some(503));
    }

    #[test]
    fn probabilities_replay_from_the_seed() {
        let draw = |seed| {
            let plan = FaultPlan::new(seed);
            plan.set_fail_5xx(Some(ErrorFault::new(Trigger::Probability(0.5))));
            (0..64).map(|_| plan.before(Endpoint::Confirm).fail_status.is_some()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).contains(&true) && draw(7).contains(&false));
    }

    #[test]
    fn config_json_round_trips() {
        let json = r#"{"seed":3,"latency":{"min_ms":5,"max_ms":9,"when":"always","on":["confirm","lookup"]},
            "fail_5xx":{"when":{"next":2}},"lose_reply_after_commit":{"when":{"probability":0.5}},
            "drop_connections":{"next":1}}"#;
        let config: FaultConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.latency.unwrap().on, Endpoints { confirm: true, lookup: true, cancel: false });
        assert_eq!(config.fail_5xx.unwrap().on, Endpoints::default());
        let plan = FaultPlan::new(0);
        plan.apply(config.clone()).unwrap();
        assert_eq!(plan.snapshot(), config);
        assert!(plan.apply(FaultConfig { drop_connections: Some(Trigger::Probability(2.0)), ..config }).is_err());
    }
}
