//! The fault schedule: drawn from the run's seed, one fault at a time, for
//! as long as the clients run. Besides the random ones, every run with
//! faults holds the gateway's confirms past the give-up once a fifth of the
//! operations are done, kills an instance once a quarter are done and
//! PostgreSQL once half are, so each strategy's report shows all three; and
//! COMMIT acknowledgements are lost at a base rate throughout.
//!
//! A gateway hold is session 11's late charge on the shipped path: confirms
//! received during the window are carried out only after the give-up, so
//! their payments are failed and watched, and a charge that lands must be
//! refunded by the confirm's own late answer or, when the instance that sent
//! it died meanwhile (the kill follows the hold), by another instance's
//! watch. The window is aimed, not hoped for: it stays open until it holds
//! a confirm (bounded by [`HOLD_AIM_MAX`]), so every run lands one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_gateway::fake::{Endpoint, FaultPlan, LatencyFault};
use tally_sim::rng::SimRng;

use crate::deploy::{Database, Instance};
use crate::proxy::Partition;

/// How long a gateway hold stays open past its drawn window waiting for a
/// confirm to hold. Confirms are a few per second under the default
/// workload; the bound keeps a run whose clients send none from hanging.
pub const HOLD_AIM_MAX: Duration = Duration::from_secs(15);

/// How hard the schedule hits (`--faults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    None,
    Light,
    Heavy,
}

impl Level {
    /// The pause between two faults (ms), and the base chance per mille that
    /// a COMMIT's acknowledgement is lost.
    fn pace(self) -> ((u64, u64), u64) {
        match self {
            Level::None => ((0, 0), 0),
            Level::Light => ((1_500, 4_000), 10),
            Level::Heavy => ((400, 1_500), 30),
        }
    }
}

macro_rules! kinds {
    ($($kind:ident => $label:literal),* $(,)?) => {
        /// Every kind of fault the schedule injects.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind { $($kind),* }
        impl Kind {
            pub const ALL: [Kind; [$(Kind::$kind),*].len()] = [$(Kind::$kind),*];
            pub const fn label(self) -> &'static str {
                match self { $(Kind::$kind => $label),* }
            }
        }
    };
}

kinds! {
    Latency => "database link latency windows (5-80 ms per chunk)",
    Stall => "database link stalls (every connection hangs)",
    Reset => "partitions with reset (connections closed, new ones refused)",
    LostAckWindow => "lost-acknowledgement windows (20% of COMMITs)",
    GatewayHold => "gateway confirm windows held past the give-up (charges landing late)",
    InstanceKill => "tally instances killed (kill -9) and restarted",
    PostgresKill => "PostgreSQL killed (kill -9) and restarted (crash recovery)",
}

/// How many of each kind were injected.
#[derive(Debug, Default)]
pub struct Counts([AtomicU64; Kind::ALL.len()]);

impl Counts {
    fn add(&self, kind: Kind) {
        self.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// What the schedule acts on.
#[derive(Debug)]
pub struct Targets {
    pub instances: Arc<Vec<Instance>>,
    pub database: Arc<Database>,
    pub http: reqwest::Client,
    pub counts: Counts,
    /// The fake gateway's faults, and the give-up the instances run with.
    pub gateway: Arc<FaultPlan>,
    pub gateway_give_up: Duration,
    /// Confirms the gateway hold caught: held past the give-up when its
    /// window closed.
    pub held_confirms: AtomicU64,
    /// Errors restarting something: a restart that fails is a finding.
    pub errors: std::sync::Mutex<Vec<String>>,
}

impl Targets {
    fn error(&self, what: String) {
        self.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(what);
    }

    /// Starts every instance that is not running (after the schedule, or
    /// when a restart failed).
    pub async fn restart_instance(&self, index: usize) {
        let instance = &self.instances[index];
        instance.kill().await;
        if let Err(error) = instance.start(&self.http).await {
            self.error(format!("restarting instance {}: {error}", index + 1));
        }
    }

    async fn crash_postgres(&self) {
        let database = Arc::clone(&self.database);
        match tokio::task::spawn_blocking(move || database.crash_and_restart()).await {
            Ok(Ok(_)) => match self.database.socket() {
                Ok(socket) => {
                    for instance in self.instances.iter() {
                        instance.proxy.retarget(socket.clone());
                        instance.proxy.reset_all();
                    }
                }
                Err(error) => self.error(format!("after restarting PostgreSQL: {error}")),
            },
            Ok(Err(error)) => self.error(format!("restarting PostgreSQL: {error}")),
            Err(error) => self.error(format!("restarting PostgreSQL: {error}")),
        }
    }

    /// Every link healthy, no lost acknowledgements, no new confirm held
    /// (those already held still land when their wait ends).
    pub fn heal(&self) {
        for instance in self.instances.iter() {
            instance.proxy.heal();
            instance.proxy.set_lost_acks(0);
        }
        self.gateway.set_latency(None);
    }
}

/// Runs faults until `done`; `progress` is the share of operations done (‰).
pub async fn run(targets: Arc<Targets>, level: Level, seed: u64, progress: impl Fn() -> u64, done: &AtomicBool) {
    let ((gap_low, gap_high), base_lost) = level.pace();
    if level == Level::None {
        return;
    }
    let mut rng = SimRng::new(seed).fork(7);
    for instance in targets.instances.iter() {
        instance.proxy.set_lost_acks(base_lost);
    }
    let count = targets.instances.len();
    let (mut held_gateway, mut killed_instance, mut killed_postgres) = (false, false, false);
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(rng.millis(gap_low, gap_high)).await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let share = progress();
        let kind = if !held_gateway && share >= 200 {
            Kind::GatewayHold
        } else if !killed_instance && share >= 250 {
            Kind::InstanceKill
        } else if !killed_postgres && share >= 500 {
            Kind::PostgresKill
        } else {
            // PostgreSQL restarts are the slowest fault: rarer than the rest.
            // A gateway hold is scheduled once only: each holds a confirm's
            // client for 12 s or more, and one is enough to land late
            // charges on every strategy.
            let weights = [(Kind::Latency, 4), (Kind::Stall, 3), (Kind::Reset, 3), (Kind::LostAckWindow, 3)];
            let weights: Vec<_> = weights
                .into_iter()
                .chain([(Kind::InstanceKill, 2), (Kind::PostgresKill, u64::from(level == Level::Heavy))])
                .collect();
            let total: u64 = weights.iter().map(|(_, w)| w).sum();
            let mut draw = rng.below(total);
            weights
                .iter()
                .find(|(_, w)| {
                    let hit = draw < *w;
                    draw = draw.saturating_sub(*w);
                    hit
                })
                .map_or(Kind::Latency, |(k, _)| *k)
        };
        let victim = rng.index(count);
        let proxy = &targets.instances[victim].proxy;
        targets.counts.add(kind);
        match kind {
            Kind::Latency => {
                proxy.set_latency(rng.millis(5, 80));
                tokio::time::sleep(rng.millis(1_000, 3_000)).await;
                proxy.set_latency(Duration::ZERO);
            }
            Kind::Stall => {
                proxy.set_partition(Partition::Hang);
                tokio::time::sleep(rng.millis(200, 1_500)).await;
                proxy.set_partition(Partition::None);
            }
            Kind::Reset => {
                proxy.set_partition(Partition::Reset);
                tokio::time::sleep(rng.millis(100, 800)).await;
                proxy.set_partition(Partition::None);
            }
            Kind::LostAckWindow => {
                proxy.set_lost_acks(200);
                tokio::time::sleep(rng.millis(1_000, 2_000)).await;
                proxy.set_lost_acks(base_lost);
            }
            Kind::GatewayHold => {
                held_gateway = true;
                // Each confirm received in the window waits 2 to 4 s past the
                // give-up before the gateway carries it out; the confirm's
                // sender (30 s timeout) usually hears it late.
                let (low, high) = (targets.gateway_give_up + Duration::from_secs(2), Duration::from_secs(2));
                let hold = LatencyFault::range(low, low + high).on(&[Endpoint::Confirm]);
                targets.gateway.set_latency(Some(hold));
                tokio::time::sleep(rng.millis(1_500, 3_000)).await;
                // A window that caught no confirm proves nothing about late
                // charges (session 13 saw runs with none): keep it open until
                // one is held, within the bound.
                let aim_until = Instant::now() + HOLD_AIM_MAX;
                while targets.gateway.confirms_delayed_now() == 0
                    && Instant::now() < aim_until
                    && !done.load(Ordering::Relaxed)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                targets.held_confirms.store(targets.gateway.confirms_delayed_now(), Ordering::Relaxed);
                targets.gateway.set_latency(None);
            }
            Kind::InstanceKill => {
                killed_instance = true;
                targets.instances[victim].kill().await;
                tokio::time::sleep(rng.millis(100, 1_000)).await;
                targets.restart_instance(victim).await;
            }
            Kind::PostgresKill => {
                killed_postgres = true;
                targets.crash_postgres().await;
            }
        }
    }
    targets.heal();
}
