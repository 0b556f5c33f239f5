//! `tally-chaos`: the shipped path under faults.
//!
//! Real `tally serve` processes (this binary re-executed as `tally-chaos
//! serve`, which runs `tally::serve::serve`, the code `tally serve` runs) on
//! a real, durable PostgreSQL cluster, each behind a TCP fault proxy; the
//! fake payment gateway; the simulation's clients and oracle. See
//! docs/chaos.md.
//!
//! # Layout
//!
//! - [`proxy`]: the fault proxy (latency, stalls, partitions, lost COMMIT
//!   acknowledgements);
//! - [`deploy`]: the cluster (crash and restart), the instances (kill and
//!   restart), the harness's own database handle;
//! - [`faults`]: the fault schedule;
//! - [`clients`]: the simulation's workload over HTTP, recording the history;
//! - [`checks`]: the bank check while running, the oracle at the end;
//! - [`run`]: one strategy's run; this module: the command line and the report.

mod checks;
mod clients;
mod deploy;
mod faults;
mod proxy;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tally_pg::Strategy;
use tally_sim::journal::Count;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Pessimistic,
    Optimistic,
    Atomic,
    All,
}

impl Which {
    fn strategies(self) -> Vec<Strategy> {
        match self {
            Which::Pessimistic => vec![Strategy::Pessimistic],
            Which::Optimistic => vec![Strategy::Optimistic],
            Which::Atomic => vec![Strategy::Atomic],
            Which::All => Strategy::ALL.to_vec(),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "tally-chaos",
    about = "Real tally serve processes on real PostgreSQL, under faults, histories checked"
)]
struct Cli {
    /// Which PostgreSQL strategy the instances run (`all`: each in turn).
    #[arg(long, value_enum, default_value = "all")]
    strategy: Which,
    /// Operations per strategy, shared out among the clients.
    #[arg(long, default_value_t = 2_000)]
    ops: usize,
    /// `tally serve` processes on the one database (1 to 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3))]
    instances: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    #[arg(long, value_enum, default_value = "heavy")]
    faults: faults::Level,
    /// Seconds for the whole run; each strategy gets an equal share, after
    /// which its clients start no new operation (the report says so).
    #[arg(long, default_value_t = 1_800)]
    time_budget: u64,
    /// The seed of the workload and the fault schedule (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the cluster, the logs and the histories go (default: a new
    /// directory under the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    // `tally-chaos serve …` is `tally serve …`: the harness starts its
    // instances from its own executable, so one `cargo run` builds both.
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(chaos(cli)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("tally-chaos: {error}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: tally::serve::ServeArgs,
}

fn serve() -> ExitCode {
    let args = ServeCli::parse_from(std::env::args().skip(1)).serve;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(tally::serve::serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tally serve: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every asked strategy; the number of violations.
async fn chaos(cli: Cli) -> Result<usize, deploy::DeployError> {
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
    });
    let dir = cli.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("tally-chaos-{seed}")));
    std::fs::create_dir_all(&dir).map_err(|e| deploy::DeployError::Other(format!("{}: {e}", dir.display())))?;
    // Absolute: the cluster's data directory and the instances' files are
    // named from other working directories.
    let dir = std::fs::canonicalize(&dir).map_err(|e| deploy::DeployError::Other(format!("{}: {e}", dir.display())))?;
    println!(
        "tally-chaos: seed {seed}, {} instances, faults {:?}, files in {}",
        cli.instances,
        cli.faults,
        dir.display()
    );
    let database = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || deploy::Database::start(&dir))
            .await
            .map_err(|e| deploy::DeployError::Other(e.to_string()))??
    };
    let database = Arc::new(database);
    let strategies = cli.strategy.strategies();
    let budget = Duration::from_secs(cli.time_budget) / u32::try_from(strategies.len()).unwrap_or(1);
    let settings = run::Settings {
        seed,
        ops: cli.ops,
        instances: usize::try_from(cli.instances).unwrap_or(3),
        clients: cli.clients,
        faults: cli.faults,
        budget,
        dir: dir.clone(),
    };
    let mut outcomes = Vec::new();
    for strategy in strategies {
        let outcome = run::run(Arc::clone(&database), strategy, &settings).await;
        match outcome {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                database.stop();
                return Err(error);
            }
        }
    }
    {
        let database = Arc::clone(&database);
        let _ = tokio::task::spawn_blocking(move || database.stop()).await;
    }
    Ok(report(seed, &outcomes))
}

/// Prints the report; returns the number of violations. Its last line is
/// `violations: N`.
fn report(seed: u64, outcomes: &[run::Outcome]) -> usize {
    let mut total = 0;
    for outcome in outcomes {
        let counts = &outcome.counts;
        println!();
        println!("== {} ({:.1} s)", outcome.strategy.as_str(), outcome.elapsed.as_secs_f64());
        for count in [
            Count::Operations,
            Count::OperationsCompleted,
            Count::OperationsAbandoned,
            Count::Requests,
            Count::AttemptTimeouts,
            Count::DuplicatesSent,
            Count::DuplicateInFlight409,
            Count::ReplaysServed,
            Count::RetriesToAnotherHost,
            Count::OrdersCreated,
            Count::OrdersPaid,
            Count::OutOfStock,
            Count::OrderExpired,
            Count::SecondTabConfirms,
            Count::OtherTabRefused,
            Count::BesideRequests,
            Count::LateChargesRefunded,
        ] {
            println!("  {:>7}  {}", counts.get(count), count.name());
        }
        println!("  faults:");
        for (label, n) in &outcome.faults {
            println!("  {n:>7}  {label}");
        }
        println!("  {:>7}  confirms the gateway hold caught past the give-up", outcome.held_confirms);
        println!("  {:>7}  COMMITs seen by the proxies", outcome.commits);
        println!(
            "  {:>7}  COMMIT acknowledgements lost (committed or not, the service never heard)",
            outcome.lost_acks
        );
        println!("  {:>7}  proxy connection resets", outcome.resets);
        println!("  {:>7}  live snapshots judged by the bank check", outcome.bank_snapshots);
        if outcome.cut_short {
            println!("  the time budget ran out: clients stopped before all their operations");
        }
        for violation in &outcome.violations {
            println!("  VIOLATION {violation}");
        }
        if !outcome.violations.is_empty() {
            println!(
                "  seed {seed}; checks violated: {}; history: {}",
                outcome.violations.iter().map(|v| v.check).collect::<std::collections::BTreeSet<_>>().len(),
                outcome.history.display()
            );
        }
        total += outcome.violations.len();
    }
    println!();
    println!("seed: {seed}");
    println!("violations: {total}");
    total
}
