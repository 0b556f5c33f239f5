//! What one seed deploys and does to it: the deployment's shape, the
//! clients' behaviour, and the faults — drawn once, up front, from the seed.
//!
//! Faults follow *swarm testing*: under the `swarm` profile each kind of
//! fault is switched on or off per seed (a coin each) and given random
//! parameters, so some seeds hammer one mechanism with nothing else in the
//! way and others mix everything. `light` and `heavy` fix the mix; `none`
//! runs the deployment with well-behaved clients and nothing injected.

use std::time::Duration;

use crate::rng::SimRng;
use crate::shared::{self, Violation};

mod adversary;

pub use adversary::{Adversary, BOUNDARY_PER_MILLE, Boundary, Calendar, Habits, SHARED_KEYS};

/// Which faults a seed may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    None,
    Light,
    Heavy,
    Swarm,
}

impl Profile {
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::None => "none",
            Profile::Light => "light",
            Profile::Heavy => "heavy",
            Profile::Swarm => "swarm",
        }
    }
}

/// The deployment and workload size, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Server instances (1 to 3).
    pub hosts: usize,
    /// Client hosts.
    pub clients: usize,
    /// Operations per seed, shared out among the clients.
    pub ops: usize,
    pub profile: Profile,
    /// Simulated time per turmoil step.
    pub tick: Duration,
    /// Known, reported bugs whose violations are counted but do not fail the run.
    pub accept_known: Vec<KnownIssue>,
}

/// A bug the simulation found, reported, and not yet fixed. Accepting one
/// keeps a run green while the fix is pending; the report still counts
/// every occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KnownIssue {
    /// The completer's claim (`PaymentEvent::Touch`) restarts the gateway
    /// attempt's clock, and the give-up is measured from that clock: a
    /// confirm that never reached the gateway is looked up forever and the
    /// payment stays `confirming`.
    StuckConfirming,
    /// A business refusal (409) is answered although storing it as the key's
    /// response failed (`settle` ignores its commit's error), so a retry of
    /// the key runs again — and succeeds once the stock is back.
    UnstoredRefusal,
}

impl KnownIssue {
    pub fn matches(self, violation: &Violation) -> bool {
        match self {
            KnownIssue::StuckConfirming => {
                violation.invariant == shared::INV_RECOVERED && violation.detail.contains("still confirming")
            }
            KnownIssue::UnstoredRefusal => {
                violation.invariant == shared::INV_IDEMPOTENCY
                    && violation.check == "all answers for one key agree"
                    && violation.detail.contains(": answered 409 ")
                    && violation.detail.contains(" and later 20")
            }
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            hosts: 3,
            clients: 4,
            ops: 30,
            profile: Profile::Swarm,
            tick: Duration::from_millis(DEFAULT_TICK_MS),
            accept_known: Vec::new(),
        }
    }
}

/// The default simulated step. Network hops take whole steps; timers inside
/// a host (database round trips, timeouts) keep millisecond precision.
pub const DEFAULT_TICK_MS: u64 = 10;

/// Service timings the simulation configures, shorter than production's so
/// that leases, the completer and give-ups happen within a short run, in the
/// same proportions (request timeout < lease < TTL; gateway timeout ≪ give-up).
pub mod timing {
    use std::time::Duration;

    pub const LEASE: Duration = Duration::from_secs(3);
    pub const KEY_TTL: Duration = Duration::from_secs(120);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(2500);
    pub const LOCK_WAIT: Duration = Duration::from_secs(2);
    /// The lock table's lease: well above a transaction's usual time (tens
    /// of milliseconds, a few hundred for a large batch), below a zombie's
    /// stall, and short enough that a zombie resumes within its request's
    /// timeout.
    pub const LOCK_LEASE: Duration = Duration::from_secs(1);
    /// How much longer than the lease a zombie stalls.
    pub const ZOMBIE_OVERRUN_MS: (u64, u64) = (150, 900);
    pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(1);
    pub const GATEWAY_GIVE_UP: Duration = Duration::from_secs(20);
    /// How long a given-up payment is watched for a late charge: longer
    /// than a confirm's longest flight after the largest clock step.
    pub const GATEWAY_WATCH: Duration = Duration::from_secs(30);
    /// The clock step past the give-up that some seeds take while the
    /// gateway delays confirms (hole 11): a confirm still on its way is
    /// given up on, then lands.
    pub const LATE_STEP: Duration = Duration::from_secs(25);
    pub const COMPLETER_AFTER: Duration = Duration::from_secs(3);
    pub const COMPLETER_EVERY: Duration = Duration::from_millis(500);
    pub const REAPER_EVERY: Duration = Duration::from_secs(5);
    /// The order-expiry sweeper's cadence and batch, as `tally serve` runs it.
    pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
    pub const SWEEP_BATCH: usize = 100;
    /// A client stops retrying a key this old (by the service's clock): a
    /// retry must reach the server before the key can expire, even across
    /// the clock advances (16 s at most, and the late step), or "one effect
    /// per key" would not be promised.
    pub const KEY_AGE_MAX: Duration = Duration::from_secs(120 - 16 - LATE_STEP.as_secs() - 4);
}

/// A probability for the fake gateway's triggers, as per mille (what the
/// simulation reasons in) and as the float the fake takes. A table of
/// literals, because the workspace allows no float arithmetic.
pub const GATEWAY_PROBABILITIES: [(u64, f64); 4] = [(50, 0.05), (100, 0.1), (200, 0.2), (350, 0.35)];
/// Of the clients, how many (per mille) have the busy-tabs habit
/// ([`adversary::Habits::busy_tabs`]).
pub const BUSY_TABS_PER_MILLE: u64 = 400;
/// Of the seeds whose gateway delays requests, how many (per mille) step
/// the clock past the give-up ([`timing::LATE_STEP`]).
pub const LATE_STEP_PER_MILLE: u64 = 1000;
/// The gateway's delays (ms) on a seed with a late step: past the servers'
/// gateway timeout, so a confirm is still on its way when it is looked up.
pub const LATE_DELAY_MS: (u64, u64) = (600, 2000);
/// turmoil's per-message link failure rates for message-loss windows.
pub const LOSS_RATES: [f64; 3] = [0.005, 0.02, 0.05];

/// Something the driver does to the deployment at a simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Partition(String, String),
    Repair(String, String),
    Crash(String),
    /// Start a crashed server again (or restart a running one).
    Restart(String),
    AdvanceClock(Duration),
    /// Step the clock past the gateway give-up ([`timing::LATE_STEP`]) the
    /// next moment the gateway is delaying a confirm (hole 11).
    LateStep,
    /// Turn random link failures on (index into [`LOSS_RATES`]) or off.
    Loss(Option<usize>),
}

/// How the clients behave this seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientBehaviour {
    pub attempt_timeout: Duration,
    pub attempts: u32,
    pub backoff: Duration,
    /// Chance (per mille) to send a duplicate while the first is in flight.
    pub duplicate_per_mille: u64,
    /// Chance (per mille) that a retry goes to another server.
    pub switch_per_mille: u64,
    pub think_max_ms: u64,
}

/// Gateway faults: the index of a probability in [`GATEWAY_PROBABILITIES`], per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayFaults {
    /// Delay range (ms) and how often it applies.
    pub latency: Option<(u64, u64, usize)>,
    pub fail_5xx: Option<usize>,
    pub fail_5xx_after_commit: Option<usize>,
    pub lose_reply: Option<usize>,
    pub drop_connection: Option<usize>,
}

/// The catalogue a seed sells and how long its holds last: scarce stock and
/// a few seats behind a small queue, so that clients contend for them, and an
/// order TTL short enough that unpaid orders lapse mid-flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// Per product: its price (whole units of [`TAG_SPACE`]) and its stock.
    pub products: Vec<(u64, u64)>,
    /// The one showtime's seats: their prices (whole units).
    pub seats: Vec<u64>,
    /// At most this many queue tokens active at once.
    pub active_limit: u32,
    pub token_ttl: Duration,
    /// The servers' `Config::order_ttl`.
    pub order_ttl: Duration,
    /// Whether clients sometimes pay orders through the gateway.
    pub orders_via_gateway: bool,
    /// Whether every client pays at the last moment: orders placed just
    /// before a whole second (when the servers' once-a-second sweepers run),
    /// confirms sent to land just before the order's TTL — a payment racing
    /// the expiry job (SPEC.md invariant 7). Such seeds use a 1 s order TTL
    /// and a database that is never instant.
    pub races_expiry: bool,
    /// The event's `max_seats_per_token`: mostly below the showtime's seats,
    /// so that one token placing order after order meets it (issue 10, hole 7).
    pub max_seats_per_token: u32,
}

/// Seeds (per mille) whose clients race the order TTL.
pub const RACING_PER_MILLE: u64 = 200;

impl Inventory {
    fn draw(rng: &mut SimRng) -> Inventory {
        let products = (0..rng.range(2, 3)).map(|_| (rng.range(1, 3), rng.range(1, 5))).collect();
        let seats = (0..rng.range(2, 4)).map(|_| rng.range(1, 3)).collect();
        let order_ttl = Duration::from_secs(*rng.pick(&[2, 3, 5, 8, 12, 20]));
        let orders_via_gateway = rng.chance(500);
        let races_expiry = rng.chance(RACING_PER_MILLE);
        let active_limit = *rng.pick(&[1, 1, 2, 3]);
        let token_ttl = Duration::from_secs(*rng.pick(&[1, 2, 3, 6]));
        // Drawn after everything above, so those stay what they were.
        let max_seats_per_token = *rng.pick(&[1, 1, 2, 2, 4]);
        let mut seats: Vec<u64> = seats;
        if max_seats_per_token < 4 && rng.chance(500) {
            // Room to hoard: more seats than one token may hold.
            seats.extend((0..2).map(|_| rng.range(1, 3)));
        }
        Inventory {
            products,
            seats,
            // Mostly one active token: with two users per four clients, a
            // larger limit would never make anybody wait.
            active_limit,
            token_ttl,
            order_ttl: if races_expiry { Duration::from_secs(1) } else { order_ttl },
            orders_via_gateway,
            races_expiry,
            max_seats_per_token,
        }
    }
}

/// Faults of the time and the gateway's honesty, drawn on a stream of
/// their own so that the older fault draws stay what they were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoneyFaults {
    /// Per server: how far its clock lags the database's (the first
    /// server's never does).
    pub skew: Vec<Duration>,
    /// Confirms (per mille) the gateway charges for another amount than
    /// asked: seed 003's tampering, which leaves a refund owed.
    pub tamper_per_mille: u64,
    /// Per server: how much slower its clock runs (parts per million; the
    /// first server's never drifts). Drawn last, so the draws above stay.
    pub drift_ppm: Vec<u32>,
}

impl MoneyFaults {
    fn draw(rng: &mut SimRng, profile: Profile, hosts: usize, calendar: &Calendar) -> MoneyFaults {
        // Lagging clocks matter most where the calendar rolls: more often
        // on boundary seeds.
        let skew_chance = if calendar.boundary.is_some() { 800 } else { 300 };
        let mut on = |swarm: u64, light: u64| match profile {
            Profile::None => false,
            Profile::Light => rng.chance(light),
            Profile::Heavy => true,
            Profile::Swarm => rng.chance(swarm),
        };
        let (skewed, tampering) = (on(skew_chance, 200), on(500, 200));
        // At most half a second: a lag adds to the clock advances (16 s at
        // most, and the late step) that keys must outlive (KEY_AGE_MAX).
        let least = if calendar.boundary.is_some() { 100 } else { 0 };
        let skew = (0..hosts)
            .map(|index| match index {
                0 => Duration::ZERO,
                _ if skewed => rng.millis(least, 500),
                _ => Duration::ZERO,
            })
            .collect();
        let tamper_per_mille = if tampering { *rng.pick(&[50, 150, 300]) } else { 0 };
        // At most 200 ppm (a clock without time sync): 0.4 ms over a
        // seed's typical seconds, 360 ms over the 30-minute run limit.
        let drift_ppm =
            (0..hosts).map(|index| if index > 0 && skewed { *rng.pick(&[0, 50, 200]) } else { 0 }).collect();
        MoneyFaults { skew, tamper_per_mille, drift_ppm }
    }
}

/// Faults of the database itself (issue 14), drawn on a stream of their
/// own. Times are simulated time since the run began; every window ends
/// within a couple of seconds, and the quiet phase turns them all off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbFaults {
    /// Commits (per mille) whose `COMMIT` is lost on its way: the caller is
    /// told the outcome is unknown (`Ambiguous`), and nothing was applied.
    pub unapplied_per_mille: u64,
    /// Stalls (start, length): every statement waits for the stall's end.
    pub stalls: Vec<(Duration, Duration)>,
    /// Outages (start, length): the database cannot be reached; statements
    /// fail after a connect timeout.
    pub outages: Vec<(Duration, Duration)>,
    /// Restarts (when, downtime): every transaction open at that moment is
    /// dropped, and the database is unreachable for the downtime.
    pub restarts: Vec<(Duration, Duration)>,
    /// Zombies (issue 14, item 3): from `at` on, the next transaction of
    /// server `server` (an index) that reaches `COMMIT` under its lock grant
    /// stalls there for `stall`, past its lock lease, then goes on — a
    /// process paused while it holds locks (turmoil cannot freeze a host, so
    /// the pause is that statement's). Drawn on a stream of its own.
    pub zombies: Vec<Zombie>,
}

/// One zombie: see [`DbFaults::zombies`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zombie {
    pub at: Duration,
    pub server: usize,
    pub stall: Duration,
}

impl Zombie {
    fn draw(rng: &mut SimRng, profile: Profile, hosts: usize, horizon_ms: u64) -> Vec<Zombie> {
        let on = match profile {
            Profile::None => false,
            Profile::Light => rng.chance(150),
            Profile::Heavy => true,
            Profile::Swarm => rng.chance(300),
        };
        if !on {
            return Vec::new();
        }
        let (low, high) = timing::ZOMBIE_OVERRUN_MS;
        (0..rng.range(1, 2))
            .map(|_| Zombie {
                at: rng.millis(10, horizon_ms),
                server: rng.index(hosts),
                stall: timing::LOCK_LEASE + rng.millis(low, high),
            })
            .collect()
    }
}

impl DbFaults {
    fn draw(rng: &mut SimRng, profile: Profile, horizon_ms: u64) -> DbFaults {
        let mut on = |swarm: u64, light: u64| match profile {
            Profile::None => false,
            Profile::Light => rng.chance(light),
            Profile::Heavy => true,
            Profile::Swarm => rng.chance(swarm),
        };
        let switches = [on(300, 150), on(250, 100), on(250, 100), on(250, 100)];
        let [unapplied, stalls, outages, restarts] = switches;
        let windows = |rng: &mut SimRng, on: bool, low: u64, high: u64| -> Vec<(Duration, Duration)> {
            if !on {
                return Vec::new();
            }
            (0..rng.range(1, 2)).map(|_| (rng.millis(10, horizon_ms), rng.millis(low, high))).collect()
        };
        DbFaults {
            unapplied_per_mille: if unapplied { rng.range(5, 60) } else { 0 },
            stalls: windows(rng, stalls, 50, 1_500),
            outages: windows(rng, outages, 50, 1_000),
            restarts: windows(rng, restarts, 20, 400),
            zombies: Vec::new(),
        }
    }

    pub fn any(&self) -> bool {
        self.unapplied_per_mille > 0
            || !self.stalls.is_empty()
            || !self.outages.is_empty()
            || !self.restarts.is_empty()
            || !self.zombies.is_empty()
    }
}

/// The servers' group commit (`Config::batch_shards`, `batch_overlap`).
/// `tally serve` runs 2 queues with overlap 1; a seed draws around that,
/// and often a single queue, where any two requests arriving while a batch
/// runs share the next one: the combinations a batch must decide exactly as
/// if each ran alone (hole 13) are met far more often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub shards: usize,
    pub overlap: usize,
}

impl Batching {
    fn draw(rng: &mut SimRng) -> Batching {
        Batching { shards: *rng.pick(&[1, 1, 2, 8]), overlap: *rng.pick(&[0, 1, 1]) }
    }
}

/// Everything one seed runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub options: Options,
    pub users: usize,
    /// Operations per client.
    pub ops_per_client: Vec<usize>,
    pub net_latency: (Duration, Duration),
    pub db_latency_max_ms: u64,
    /// Per-mille chances of an ambiguous and of a lost commit.
    pub commit_faults: Option<(u64, u64)>,
    pub gateway: GatewayFaults,
    pub client: ClientBehaviour,
    pub inventory: Inventory,
    pub adversary: Adversary,
    pub money_faults: MoneyFaults,
    pub db_faults: DbFaults,
    pub batching: Batching,
    /// Sorted by time.
    pub actions: Vec<(Duration, Action)>,
}

pub fn server_name(index: usize) -> String {
    format!("tally-{}", index + 1)
}

pub fn client_name(index: usize) -> String {
    format!("client-{}", index + 1)
}

impl Plan {
    pub fn draw(seed: u64, options: &Options) -> Plan {
        let root = SimRng::new(seed);
        let mut rng = root.fork(1);
        let profile = options.profile;
        // Whether a kind of fault is on this seed, and whether parameters run high.
        let mut on = |light: u64| match profile {
            Profile::None => false,
            Profile::Light => rng.chance(light),
            Profile::Heavy => true,
            Profile::Swarm => rng.chance(500),
        };
        let switches = [on(300), on(300), on(200), on(200), on(250), on(250), on(300), on(200)];
        let [partitions, crashes, loss, clock, commits, gateway_on, slow_net, db_slow] = switches;
        let heavy = profile == Profile::Heavy;
        let mut rng = root.fork(2);

        let clients = options.clients.max(1);
        let users = clients.div_ceil(2);
        let ops_per_client: Vec<usize> =
            (0..clients).map(|c| options.ops / clients + usize::from(c < options.ops % clients)).collect();

        let net_latency = if slow_net {
            (rng.millis(0, 2), rng.millis(10, if heavy { 80 } else { 40 }))
        } else {
            (Duration::ZERO, rng.millis(1, 4))
        };
        let db_latency_max_ms = if db_slow { *rng.pick(&[3, 5, 10]) } else { *rng.pick(&[0, 1, 2]) };
        let commit_faults = commits.then(|| {
            let high = heavy || rng.chance(300);
            (if high { rng.range(20, 80) } else { rng.range(3, 20) }, rng.range(0, 20))
        });
        let probability = |rng: &mut SimRng| rng.index(GATEWAY_PROBABILITIES.len());
        let mut gateway = if gateway_on {
            let sub = |rng: &mut SimRng| (heavy || rng.chance(600)).then(|| probability(rng));
            GatewayFaults {
                latency: (heavy || rng.chance(600)).then(|| {
                    let low = rng.range(0, 50);
                    (low, low + rng.range(10, 1500), probability(&mut rng))
                }),
                fail_5xx: sub(&mut rng),
                fail_5xx_after_commit: sub(&mut rng),
                lose_reply: sub(&mut rng),
                drop_connection: sub(&mut rng),
            }
        } else {
            GatewayFaults::default()
        };
        let client = if profile == Profile::None {
            // Well-behaved: patient, and never giving up before a lease ends.
            ClientBehaviour {
                attempt_timeout: Duration::from_secs(3),
                attempts: 8,
                backoff: Duration::from_millis(50),
                duplicate_per_mille: *rng.pick(&[0, 100, 300]),
                switch_per_mille: *rng.pick(&[0, 500]),
                think_max_ms: rng.range(0, 20),
            }
        } else {
            ClientBehaviour {
                attempt_timeout: Duration::from_millis(*rng.pick(&[60, 150, 400, 1000, 3000])),
                attempts: u32::try_from(rng.range(3, 8)).expect("small"),
                backoff: Duration::from_millis(*rng.pick(&[10, 50, 200, 1000])),
                duplicate_per_mille: *rng.pick(&[0, 100, 300, 600]),
                switch_per_mille: *rng.pick(&[0, 250, 600, 1000]),
                think_max_ms: rng.range(0, 30),
            }
        };

        // Faults happen while the workload runs: spread them over roughly
        // the time it takes.
        let per_client = ops_per_client.first().copied().unwrap_or(0) as u64;
        let horizon_ms = 100 + per_client * 50;
        let mut actions = Vec::new();
        let servers: Vec<String> = (0..options.hosts).map(server_name).collect();
        let when = |rng: &mut SimRng| rng.millis(10, horizon_ms);
        if partitions {
            for _ in 0..rng.range(1, if heavy { 5 } else { 3 }) {
                let server = rng.pick(&servers).clone();
                let other = if rng.chance(500) {
                    crate::gateway::GATEWAY_HOST.to_owned()
                } else {
                    client_name(rng.index(clients))
                };
                let start = when(&mut rng);
                actions.push((start, Action::Partition(server.clone(), other.clone())));
                actions.push((start + rng.millis(20, 1500), Action::Repair(server, other)));
            }
        }
        if crashes {
            for _ in 0..rng.range(1, if heavy { 4 } else { 2 }) {
                let server = rng.pick(&servers).clone();
                let start = when(&mut rng);
                actions.push((start, Action::Crash(server.clone())));
                actions.push((start + rng.millis(0, 1000), Action::Restart(server)));
            }
        }
        if loss {
            let start = when(&mut rng);
            actions.push((start, Action::Loss(Some(rng.index(LOSS_RATES.len())))));
            actions.push((start + rng.millis(50, 800), Action::Loss(None)));
        }
        if clock {
            // At most 16 s in all: past the lease (3 s), under the gateway
            // give-up (20 s); the late step below goes past it.
            for _ in 0..rng.range(1, 2) {
                let step = *rng.pick(&[1, 4, 8]);
                actions.push((when(&mut rng), Action::AdvanceClock(Duration::from_secs(step))));
            }
        }
        // Its own stream, so the draws above stay what they were: while the
        // gateway delays confirms, some seeds step the clock past the
        // give-up. A confirm still on its way is given up on, then lands:
        // the late charge the completer's watch must refund (hole 11).
        // Its delays then run past the servers' gateway timeout (1 s), so
        // the confirm is still on its way when it is looked up.
        let mut late = root.fork(11);
        if let Some((low, high, chance)) = gateway.latency
            && late.chance(LATE_STEP_PER_MILLE)
        {
            actions.push((late.millis(10, horizon_ms), Action::LateStep));
            gateway.latency = Some((low.max(LATE_DELAY_MS.0), high.max(LATE_DELAY_MS.1), chance));
        }
        // Stable: actions drawn for the same instant keep their order.
        actions.sort_by_key(|(at, _)| *at);
        // Its own stream: the fault draws above stay what they were.
        let inventory = Inventory::draw(&mut root.fork(5));
        // A payment can race the sweeper only while its transaction takes
        // time: a racing seed's database is never instant.
        let db_latency_max_ms = if inventory.races_expiry { db_latency_max_ms.max(3) } else { db_latency_max_ms };
        let mut adversary = Adversary::draw(&mut root.fork(6), clients, users, inventory.products.len());
        // Its own stream, so the habits above stay what they were.
        let mut busy = root.fork(12);
        for habits in &mut adversary.habits {
            habits.busy_tabs = busy.chance(BUSY_TABS_PER_MILLE);
        }
        let money_faults = MoneyFaults::draw(&mut root.fork(7), profile, options.hosts, &adversary.calendar);
        let mut db_faults = DbFaults::draw(&mut root.fork(9), profile, horizon_ms);
        db_faults.zombies = Zombie::draw(&mut root.fork(10), profile, options.hosts.max(1), horizon_ms);
        let batching = Batching::draw(&mut root.fork(13));
        Plan {
            seed,
            options: options.clone(),
            users,
            ops_per_client,
            net_latency,
            db_latency_max_ms,
            commit_faults,
            gateway,
            client,
            inventory,
            adversary,
            money_faults,
            db_faults,
            batching,
            actions,
        }
    }

    /// One line for the report and the replay header.
    pub fn summary(&self) -> String {
        format!(
            "net {}..{}ms, db ≤{}ms, commits {:?}, {:?}, {:?}, gateway {:?}, clients {:?}, {:?}, {:?}, {:?}, {} actions",
            self.net_latency.0.as_millis(),
            self.net_latency.1.as_millis(),
            self.db_latency_max_ms,
            self.commit_faults,
            self.db_faults,
            self.batching,
            self.gateway,
            self.client,
            self.inventory,
            self.adversary,
            self.money_faults,
            self.actions.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_plan_and_none_draws_no_faults() {
        let options = Options::default();
        assert_eq!(Plan::draw(9, &options).summary(), Plan::draw(9, &options).summary());
        let none = Plan::draw(9, &Options { profile: Profile::None, ..options });
        assert!(none.actions.is_empty() && none.commit_faults.is_none() && none.gateway == GatewayFaults::default());
        assert!(!none.db_faults.any());
        assert_eq!(none.ops_per_client.iter().sum::<usize>(), 30);
    }

    #[test]
    fn swarm_switches_fault_kinds_per_seed() {
        let options = Options::default();
        let plans: Vec<Plan> = (0..64).map(|seed| Plan::draw(seed, &options)).collect();
        assert!(plans.iter().any(|p| p.commit_faults.is_some()) && plans.iter().any(|p| p.commit_faults.is_none()));
        assert!(plans.iter().any(|p| p.actions.iter().any(|(_, a)| matches!(a, Action::Crash(_)))));
        assert!(plans.iter().any(|p| p.actions.is_empty()));
        // The database's own faults too, each kind on some seeds and off on others.
        for kind in [
            |d: &DbFaults| d.unapplied_per_mille > 0,
            |d: &DbFaults| !d.stalls.is_empty(),
            |d: &DbFaults| !d.outages.is_empty(),
            |d: &DbFaults| !d.restarts.is_empty(),
            |d: &DbFaults| !d.zombies.is_empty(),
        ] {
            assert!(plans.iter().any(|p| kind(&p.db_faults)) && plans.iter().any(|p| !kind(&p.db_faults)));
        }
    }
}
