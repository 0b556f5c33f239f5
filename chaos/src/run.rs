//! One strategy's run, from a fresh database to a verdict: set up the
//! catalogue and users, start the gateway and the instances behind their
//! proxies, run the clients under the fault schedule with the bank check
//! beside them, heal, let the completer and the sweeper finish, then judge.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_client::ReqwestTransport;

use indicatif::{ProgressBar, ProgressStyle};
use tally_core::Tally;
use tally_core::app::Config;
use tally_core::check::Snapshot;
use tally_core::idempotency::IdemConfig;
use tally_core::store::NoLocks;
use tally_core::time::Clock;
use tally_pg::Strategy;
use tally_sim::catalogue;
use tally_sim::clock::SimClock;
use tally_sim::journal::{Counts, Journal};
use tally_sim::oracle::Violation;
use tally_sim::plan::{Options, Plan, Profile, timing};
use tally_sim::rng::SimRng;
use tally_sim::workload::ClientSpec;

use crate::checks::{self, Bank};
use crate::clients;
use crate::deploy::{Database, DeployError, Instance, InstanceConfig, direct_store, free_port};
use crate::faults::{self, Level, Targets};
use crate::proxy::Proxy;

/// What the command line asks of every strategy's run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub ops: usize,
    pub instances: usize,
    pub clients: usize,
    pub faults: Level,
    /// This run's share of `--time-budget`.
    pub budget: Duration,
    pub dir: PathBuf,
}

/// How long the completer and the sweeper get after the clients finish.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// The gateway give-up the instances run with: short, so a confirm lost
/// before it reached the gateway is failed within the run.
const GATEWAY_GIVE_UP: Duration = Duration::from_secs(10);

/// What one strategy's run found.
#[derive(Debug)]
pub struct Outcome {
    pub strategy: Strategy,
    pub elapsed: Duration,
    pub counts: Counts,
    pub faults: Vec<(&'static str, u64)>,
    pub commits: u64,
    pub lost_acks: u64,
    pub resets: u64,
    pub bank_snapshots: u64,
    /// Confirms the gateway hold caught past the give-up.
    pub held_confirms: u64,
    pub violations: Vec<Violation>,
    pub history: PathBuf,
    pub cut_short: bool,
}

fn setup_config(plan: &Plan) -> Config {
    Config {
        idempotency: IdemConfig { ttl: timing::KEY_TTL, lease: Config::default().idempotency.lease },
        order_ttl: plan.inventory.order_ttl,
        payback_bps: plan.adversary.payback_bps,
        ..Config::default()
    }
}

/// The plan the simulation would draw for this seed, adapted to real time:
/// no calendar boundary (the wall clock cannot be moved), and attempts
/// patient enough for a real database.
fn plan(settings: &Settings) -> Plan {
    let options = Options {
        hosts: settings.instances,
        clients: settings.clients,
        ops: settings.ops,
        profile: Profile::Swarm,
        tick: Duration::from_millis(1),
        accept_known: Vec::new(),
    };
    let mut plan = Plan::draw(settings.seed, &options);
    plan.adversary.calendar.boundary = None;
    for habits in &mut plan.adversary.habits {
        habits.pay_at_midnight = false;
    }
    plan.client.attempt_timeout = plan.client.attempt_timeout.max(Duration::from_millis(400));
    plan
}

/// Runs one strategy.
pub async fn run(database: Arc<Database>, strategy: Strategy, settings: &Settings) -> Result<Outcome, DeployError> {
    let started = Instant::now();
    let plan = plan(settings);
    let name = format!("chaos_{}_{}", strategy.as_str(), settings.seed);
    {
        let (database, name) = (Arc::clone(&database), name.clone());
        tokio::task::spawn_blocking(move || database.create_database(&name))
            .await
            .map_err(|e| DeployError::Other(e.to_string()))??;
    }
    let store = direct_store(&database, &name)?;
    store.migrate().await.map_err(|e| DeployError::Other(e.to_string()))?;

    // Users and catalogue, written before any instance starts, as the
    // simulation does.
    let setup = Tally::new(
        store.clone(),
        NoLocks,
        tally::runtime::SystemClock,
        Arc::new(tally::runtime::UuidIds),
        setup_config(&plan),
    );
    let mut users = Vec::with_capacity(plan.users);
    for index in 0..plan.users {
        let api_key = format!("tly_chaos_user_{index}");
        let limits = plan.adversary.limits.get(index).copied().unwrap_or_default();
        let user = setup
            .create_user(&format!("user {index}"), limits, tally_http::hash_api_key(&api_key))
            .await
            .map_err(|e| DeployError::Other(format!("creating a user: {e}")))?;
        users.push((user.id, api_key));
    }
    let now = tally::runtime::SystemClock.now();
    let catalogue = Arc::new(catalogue::create_with(&setup, now, &plan.inventory, &plan.adversary).await);
    store.pool().close().await;

    // The gateway, served here so its books can be read at the end.
    let gateway = tally_gateway::FakeGateway::new("test_sk");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| DeployError::Other(format!("binding the gateway: {e}")))?;
    let gateway_url = format!("http://{}", listener.local_addr().map_err(|e| DeployError::Other(e.to_string()))?);
    let (stop_gateway, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = gateway.clone();
    let gateway_task = tokio::spawn(async move {
        let _ = tally_gateway::fake::serve(listener, served, async {
            let _ = stopped.await;
        })
        .await;
    });

    let admin_key = format!("tly_chaos_admin_{}", settings.seed);
    let config = InstanceConfig {
        strategy,
        database: name.clone(),
        admin_key: admin_key.clone(),
        gateway_url,
        order_ttl: plan.inventory.order_ttl,
        payback_bps: plan.adversary.payback_bps,
        gateway_give_up: GATEWAY_GIVE_UP,
        dir: settings.dir.join(strategy.as_str()),
    };
    std::fs::create_dir_all(&config.dir).map_err(|e| DeployError::Other(e.to_string()))?;
    let socket = database.socket()?;
    let mut instances = Vec::with_capacity(settings.instances);
    for index in 0..settings.instances {
        let proxy = Proxy::start(socket.clone(), settings.seed.wrapping_add(index as u64))
            .await
            .map_err(|e| DeployError::Other(format!("starting a proxy: {e}")))?;
        let behind = plan.money_faults.skew.get(index).copied().unwrap_or_default();
        instances.push(Instance::new(index, free_port()?, proxy, behind, config.clone()));
    }
    let instances = Arc::new(instances);
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(0).build().map_err(|e| DeployError::Other(e.to_string()))?;
    for instance in instances.iter() {
        instance.start(&http).await?;
    }

    // The clients' clock is the service's wall clock.
    let clock = SimClock::starting_at(tally::runtime::SystemClock.now());
    let ticking = Arc::new(AtomicBool::new(true));
    let ticker = tokio::spawn({
        let (clock, ticking) = (clock.clone(), Arc::clone(&ticking));
        let origin = Instant::now();
        async move {
            while ticking.load(Ordering::Relaxed) {
                clock.set_elapsed(origin.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let journal = Journal::new(clock.clone());

    let total: usize = plan.ops_per_client.iter().sum();
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("{prefix:>12} [{elapsed_precise}] {bar:40} {pos}/{len} ops {msg}")
            .expect("a valid template"),
    );
    progress.set_prefix(strategy.as_str());
    let shared = clients::Shared {
        servers: Arc::new(
            instances
                .iter()
                .map(|instance| tally_client::Client::new(ReqwestTransport::new(http.clone(), &instance.url())))
                .collect(),
        ),
        admin_key,
        progress: progress.clone(),
        deadline: started + settings.budget,
        cut_short: Arc::new(AtomicBool::new(false)),
    };

    // The most any instance's clock lags: both judgements allow for it.
    let skew_max_ms = instances.iter().map(|i| i64::try_from(i.behind.as_millis()).unwrap_or(0)).max().unwrap_or(0);
    let done = Arc::new(AtomicBool::new(false));
    let bank = Arc::new(Bank::default());
    let bank_task =
        tokio::spawn(checks::bank(Arc::clone(&database), name.clone(), Arc::clone(&bank), skew_max_ms, done.clone()));
    let targets = Arc::new(Targets {
        instances: Arc::clone(&instances),
        database: Arc::clone(&database),
        http: http.clone(),
        counts: faults::Counts::default(),
        gateway: gateway.faults(),
        gateway_give_up: GATEWAY_GIVE_UP,
        held_confirms: AtomicU64::new(0),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let schedule = tokio::spawn({
        let (targets, done, progress) = (Arc::clone(&targets), Arc::clone(&done), progress.clone());
        let (level, seed) = (settings.faults, settings.seed);
        async move {
            let share = move || progress.position() * 1000 / progress.length().unwrap_or(1).max(1);
            faults::run(targets, level, seed, share, &done).await;
        }
    });

    let root = SimRng::new(settings.seed);
    let mut running = Vec::with_capacity(plan.ops_per_client.len());
    for index in 0..plan.ops_per_client.len() {
        let spec = ClientSpec::of_plan(&plan, index, &users, &journal, &clock, &catalogue, &root, settings.instances);
        running.push(tokio::spawn(clients::client(spec, shared.clone())));
    }
    for client in running {
        let _ = client.await;
    }
    progress.set_message("settling");
    done.store(true, Ordering::Relaxed);
    let _ = schedule.await;
    let _ = bank_task.await;
    targets.heal();
    for index in 0..instances.len() {
        if !instances[index].running().await {
            targets.restart_instance(index).await;
        }
    }

    let snapshot = settle(&database, &name, plan.inventory.order_ttl, &gateway).await?;
    tally_sim::run::count_money_paths(&journal, &snapshot, &gateway);
    let now = tally::runtime::SystemClock.now();
    ticking.store(false, Ordering::Relaxed);
    let _ = ticker.await;
    let exchanges = journal.exchanges();
    let mut violations = checks::judge(&checks::Final {
        snapshot: &snapshot,
        exchanges: &exchanges,
        gateway: &gateway,
        catalogue: &catalogue,
        now,
        skew_max_ms,
    });
    violations.extend(std::mem::take(&mut *bank.violations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)));
    for error in targets.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
        violations.push(Violation::new("recovery: every killed process comes back", "restarts", error));
    }
    // The harness's own promise: a run with faults proves late charges on
    // the shipped path, so its hold must have caught a confirm.
    if targets.counts.get(faults::Kind::GatewayHold) > 0 && targets.held_confirms.load(Ordering::Relaxed) == 0 {
        violations.push(Violation::new(
            "harness: the gateway hold catches a confirm",
            "faults",
            format!("no confirm reached the gateway within {:?} of the hold", faults::HOLD_AIM_MAX),
        ));
    }
    let history = config.dir.join("history.jsonl");
    write_history(&history, &exchanges).map_err(|e| DeployError::Other(format!("writing the history: {e}")))?;
    for instance in instances.iter() {
        instance.kill().await;
    }
    let _ = stop_gateway.send(());
    let _ = gateway_task.await;
    progress.finish_with_message(format!("{} violations", violations.len()));

    let proxies = instances.iter().map(|i| i.proxy.counts());
    let sum = |f: fn(&crate::proxy::ProxyCounts) -> &std::sync::atomic::AtomicU64| {
        proxies.clone().map(|c| f(c).load(Ordering::Relaxed)).sum::<u64>()
    };
    Ok(Outcome {
        strategy,
        elapsed: started.elapsed(),
        counts: journal.counts(),
        faults: faults::Kind::ALL.iter().map(|k| (k.label(), targets.counts.get(*k))).collect(),
        commits: sum(|c| &c.commits),
        lost_acks: sum(|c| &c.lost_acks),
        resets: sum(|c| &c.resets),
        bank_snapshots: bank.snapshots.load(Ordering::Relaxed),
        held_confirms: targets.held_confirms.load(Ordering::Relaxed),
        violations,
        history,
        cut_short: shared.cut_short.load(Ordering::Relaxed),
    })
}

/// Waits until the completer has resolved every gateway payment in flight,
/// no confirm is still held at the gateway, every charge that landed on a
/// watched payment was found (the payment is refunding or refunded), and
/// unpaid orders have had their TTL and a sweep (also those whose payment
/// failed a moment ago); then returns the final
/// snapshot (or the last one read, when `SETTLE_MAX` runs out: the oracle
/// then reports what is left).
async fn settle(
    database: &Database,
    name: &str,
    order_ttl: Duration,
    gateway: &tally_gateway::FakeGateway,
) -> Result<Snapshot, DeployError> {
    let started = Instant::now();
    // An order placed just before the clients stopped lapses one TTL later;
    // the sweeper runs every second.
    let swept = order_ttl + Duration::from_secs(2);
    loop {
        let snapshot = checks::snapshot(database, name).await;
        let now = tally::runtime::SystemClock.now();
        let settled = gateway.faults().confirms_delayed_now() == 0
            && snapshot.as_ref().is_ok_and(|s| {
                !s.payments.iter().any(|p| p.status.in_flight() || (p.watched() && landed(gateway, p)))
                    // A payment that just failed (a give-up) hands its
                    // order back to the sweeper: wait for its next sweep.
                    && !s.orders.iter().any(|o| tally_sim::oracle::awaits_sweep(o, now))
            });
        if (settled && started.elapsed() >= swept) || started.elapsed() > SETTLE_MAX {
            return snapshot.map_err(DeployError::Other);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the gateway holds a live charge of `payment`'s (its key, its
/// order id): on a watched payment, a late charge its watch has yet to find.
fn landed(gateway: &tally_gateway::FakeGateway, payment: &tally_core::payment::Payment) -> bool {
    let Some(attempt) = &payment.gateway else { return false };
    gateway.payment(&attempt.payment_key).is_some_and(|charge| {
        charge.order_id == tally_core::gateway::order_id(payment.id)
            && charge.status != tally_gateway::protocol::STATUS_CANCELED
    })
}

/// The history, one exchange per line, for a human (or a script) to read.
fn write_history(path: &std::path::Path, exchanges: &[tally_sim::journal::Exchange]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in exchanges {
        let answer = match &e.answer {
            tally_sim::journal::Answer::Reply { status, body, replayed } => serde_json::json!({
                "status": status, "body": String::from_utf8_lossy(body), "replayed": replayed,
            }),
            tally_sim::journal::Answer::Failed(why) => serde_json::json!({ "failed": why }),
        };
        let line = serde_json::json!({
            "client": e.client + 1, "op": e.op, "kind": e.kind, "path": e.path,
            "body": e.body.as_deref().map(String::from_utf8_lossy), "key": e.key, "host": e.host,
            "attempt": e.attempt, "duplicate": e.duplicate, "sent_at": e.sent_at.0, "ended_at": e.ended_at.0,
            "answer": answer,
        });
        writeln!(file, "{line}")?;
    }
    file.flush()
}
