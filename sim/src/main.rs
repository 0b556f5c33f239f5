//! `tally-sim`: run seeds of the deterministic deployment simulation and
//! report. See the crate docs and README's "Simulation" section.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tally_sim::plan::{DEFAULT_TICK_MS, KnownIssue, Options, Profile};
use tally_sim::report::{self, Aggregate};
use tally_sim::run::{self, SeedOutcome};

/// A seed allocates and frees a lot (every request's futures, buffers and
/// routes); mimalloc takes about a tenth off a seed's CPU time next to glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tally-sim", about = "Deterministic simulation of a Tally deployment (turmoil), one seed at a time")]
struct Args {
    /// How many seeds to run (default 100 unless --time-budget is given).
    #[arg(long)]
    seeds: Option<u64>,
    /// Run exactly this seed and print its whole event log (a replay).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    seed: Option<u64>,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Stop starting seeds after this much wall time (e.g. 90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration)]
    time_budget: Option<Duration>,
    /// Server instances (1 to 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3))]
    hosts: u64,
    /// Client hosts.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    clients: u64,
    /// Operations per seed, shared out among the clients.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=5000))]
    ops: u64,
    /// Which faults seeds draw: none, light, heavy, or swarm (each kind on or off per seed).
    #[arg(long, value_enum, default_value_t = Profile::Swarm)]
    faults: Profile,
    /// Simulated milliseconds per step.
    #[arg(long, default_value_t = DEFAULT_TICK_MS, value_parser = clap::value_parser!(u64).range(1..=100))]
    tick_ms: u64,
    /// Run every seed twice and require the same event-log hash.
    #[arg(long)]
    check_determinism: bool,
    /// Keep going after a violation (default: stop at the first).
    #[arg(long)]
    keep_going: bool,
    /// Count, but do not fail on, a known and reported bug.
    #[arg(long, value_enum)]
    accept_known_issue: Vec<KnownIssue>,
    /// Also write the report to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

/// `90s`, `10m`, `1h`, `1h30m`, `500ms`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&next) = chars.peek().filter(|n| n.is_ascii_alphabetic()) {
            unit.push(next);
            chars.next();
        }
        let value: u64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
        number.clear();
        total += match unit.as_str() {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" | "min" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return Err(format!("unknown unit {unit:?} in {text:?} (use ms, s, m, h)")),
        };
    }
    if !number.is_empty() || total.is_zero() {
        return Err(format!("bad duration {text:?} (e.g. 90s, 10m, 1h)"));
    }
    Ok(total)
}

/// The one command that replays `seed` with these options.
fn replay_command(args: &Args, seed: u64) -> String {
    let mut command = String::new();
    if let Ok(mutant) = std::env::var("TALLY_MUTANT") {
        command.push_str(&format!(
            "TALLY_MUTANT={mutant} RUSTFLAGS=\"--cfg tally_mutants\" CARGO_TARGET_DIR=target/sim-mutants "
        ));
    }
    command.push_str(&format!(
        "cargo run --release -p tally-sim -- --seed {seed} --hosts {} --clients {} --ops {} --faults {} --tick-ms {}",
        args.hosts,
        args.clients,
        args.ops,
        args.faults.as_str(),
        args.tick_ms
    ));
    for issue in &args.accept_known_issue {
        command.push_str(&format!(
            " --accept-known-issue {}",
            clap::ValueEnum::to_possible_value(issue).map(|v| v.get_name().to_owned()).unwrap_or_default()
        ));
    }
    command
}

fn run_one(seed: u64, options: &Options, check_determinism: bool, keep_events: bool) -> SeedOutcome {
    let mut outcome = run::run_seed_with(seed, options, keep_events);
    if check_determinism {
        let again = run::run_seed_with(seed, options, false);
        if again.hash != outcome.hash {
            outcome.violations.push(tally_sim::oracle::Violation::new(
                tally_sim::oracle::INV_DETERMINISM,
                "two runs of a seed log the same events",
                format!("event-log hashes differ: {:016x} then {:016x}", outcome.hash, again.hash),
            ));
        }
    }
    outcome
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        hosts: usize::try_from(args.hosts).expect("small"),
        clients: usize::try_from(args.clients).expect("small"),
        ops: usize::try_from(args.ops).expect("small"),
        profile: args.faults,
        tick: Duration::from_millis(args.tick_ms),
        accept_known: args.accept_known_issue.clone(),
    };
    let header = format!(
        "profile {}, {} server(s), {} client(s), {} operations per seed, tick {}ms{}",
        args.faults.as_str(),
        args.hosts,
        args.clients,
        args.ops,
        args.tick_ms,
        if args.check_determinism { ", every seed run twice (determinism check)" } else { "" }
    );

    if let Some(seed) = args.seed {
        let started = Instant::now();
        let outcome = run_one(seed, &options, args.check_determinism, true);
        let wall = started.elapsed();
        for event in &outcome.events {
            println!("{event}");
        }
        let mut aggregate = Aggregate::default();
        aggregate.add(&outcome);
        println!("event-log hash {:016x}", outcome.hash);
        print!("{}", report::render(&aggregate, &header, wall, 1));
        return if outcome.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }

    let total = args.seeds.or(if args.time_budget.is_some() { None } else { Some(100) });
    let progress = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} seeds ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("violations: 0");

    let started = Instant::now();
    let next = AtomicU64::new(args.first_seed);
    let stop = AtomicBool::new(false);
    let aggregate = Mutex::new(Aggregate::default());
    let first_failure: Mutex<Option<SeedOutcome>> = Mutex::new(None);
    // One seed at a time: tokio's task ids are process-wide (see
    // `run::align_task_ids`), so runs on parallel threads would not be
    // reproducible. Run several processes on disjoint seed ranges instead.
    let jobs = 1;
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed)
                        || args.time_budget.is_some_and(|budget| started.elapsed() >= budget)
                    {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if total.is_some_and(|n| seed >= args.first_seed + n) {
                        return;
                    }
                    let outcome = run_one(seed, &options, args.check_determinism, false);
                    let mut sums = aggregate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    sums.add(&outcome);
                    progress.inc(1);
                    progress.set_message(format!("violations: {}", sums.failures.len()));
                    if !outcome.violations.is_empty() {
                        let mut first = first_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if first.as_ref().is_none_or(|f| f.seed > outcome.seed) {
                            *first = Some(outcome);
                        }
                        if !args.keep_going {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    progress.finish_and_clear();
    let wall = started.elapsed();
    let aggregate = aggregate.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = report::render(&aggregate, &header, wall, jobs);
    print!("{text}");
    let mut failure_text = String::new();
    if let Some(failure) = first_failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        failure_text.push_str(&format!("\nFAILED: seed {}\n", failure.seed));
        for violation in &failure.violations {
            failure_text.push_str(&format!(
                "  violated invariant: {}\n    check: {}\n    detail: {}\n",
                violation.invariant, violation.check, violation.detail
            ));
        }
        failure_text.push_str(&format!("  plan: {}\n  last {} events:\n", failure.plan, failure.events.len()));
        for event in &failure.events {
            failure_text.push_str(&format!("    {event}\n"));
        }
        failure_text.push_str(&format!("  replay: {}\n", replay_command(&args, failure.seed)));
        print!("{failure_text}");
    }
    if let Some(path) = &args.report {
        let written =
            std::fs::File::create(path).and_then(|mut f| f.write_all(format!("{text}{failure_text}").as_bytes()));
        if let Err(error) = written {
            eprintln!("could not write the report to {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if aggregate.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10x").is_err());
    }
}
