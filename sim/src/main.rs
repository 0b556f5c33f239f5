//! `tally-sim`: run seeds of the deterministic deployment simulation and
//! report. See the crate docs and README's "Simulation" section.

use std::io::Write as _;
use std::process::ExitCode;
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
    /// Worker processes to run seeds on (each takes every N-th seed); use
    /// `--jobs $(nproc)` to use every core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    jobs: u64,
    /// Run every `stride`-th seed of the range (a worker's share).
    #[arg(long, default_value_t = 1, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    stride: u64,
    /// Print one JSON line per seed instead of a report (what `--jobs` runs).
    #[arg(long, hide = true)]
    worker: bool,
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

/// The options that shape a seed's run, as command-line arguments: what a
/// replay repeats and what `--jobs` hands its workers.
fn seed_options(args: &Args) -> Vec<String> {
    let mut list: Vec<String> = [
        ("--hosts", args.hosts.to_string()),
        ("--clients", args.clients.to_string()),
        ("--ops", args.ops.to_string()),
        ("--faults", args.faults.as_str().to_owned()),
        ("--tick-ms", args.tick_ms.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect();
    for issue in &args.accept_known_issue {
        list.push("--accept-known-issue".to_owned());
        list.push(clap::ValueEnum::to_possible_value(issue).map(|v| v.get_name().to_owned()).unwrap_or_default());
    }
    list
}

/// The one command that replays `seed` with these options.
fn replay_command(args: &Args, seed: u64) -> String {
    let mut command = String::new();
    if let Ok(mutant) = std::env::var("TALLY_MUTANT") {
        command.push_str(&format!("TALLY_MUTANT={mutant} "));
    }
    let features = if cfg!(feature = "mutants") { " --features mutants" } else { "" };
    command.push_str(&format!(
        "cargo run --release -p tally-sim{features} -- --seed {seed} {}",
        seed_options(args).join(" ")
    ));
    command
}

/// Where the seeds' outcomes come from: this process, one seed at a time,
/// or `--jobs` worker processes. `each` gets every outcome as it arrives
/// and says whether to go on.
fn run_seeds(args: &Args, options: &Options, total: Option<u64>, mut each: impl FnMut(SeedOutcome) -> bool) {
    let started = Instant::now();
    if args.jobs <= 1 {
        let mut seed = args.first_seed;
        while total.is_none_or(|n| seed < args.first_seed + n)
            && args.time_budget.is_none_or(|budget| started.elapsed() < budget)
        {
            if !each(run_one(seed, options, args.check_determinism, false)) {
                return;
            }
            seed += args.stride;
        }
        return;
    }
    if let Err(error) = run_workers(args, total, &mut each) {
        eprintln!("tally-sim: {error}");
        std::process::exit(2);
    }
}

/// `--jobs N`: N workers, worker `j` on seeds `first + j`, `first + j + N`, ….
fn run_workers(args: &Args, total: Option<u64>, each: &mut dyn FnMut(SeedOutcome) -> bool) -> Result<(), String> {
    use std::io::BufRead as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let (sender, receiver) = std::sync::mpsc::channel::<Result<SeedOutcome, String>>();
    let mut children = Vec::new();
    for job in 0..args.jobs {
        if total.is_some_and(|n| job >= n) {
            break;
        }
        let mut command = std::process::Command::new(&exe);
        command
            .arg("--worker")
            .args(["--first-seed", &(args.first_seed + job).to_string(), "--stride", &args.jobs.to_string()])
            .args(seed_options(args))
            .stdout(std::process::Stdio::piped());
        if let Some(n) = total {
            command.args(["--seeds", &(n - job).to_string()]);
        }
        if let Some(budget) = args.time_budget {
            command.args(["--time-budget", &format!("{}ms", budget.as_millis())]);
        }
        command.args(args.check_determinism.then_some("--check-determinism"));
        command.args(args.keep_going.then_some("--keep-going"));
        let mut child = command.spawn().map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("a worker without stdout")?;
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let outcome =
                    line.map_err(|e| format!("reading a worker: {e}")).and_then(|l| tally_sim::jobs::decode(&l));
                if sender.send(outcome).is_err() {
                    return;
                }
            }
        });
        children.push(child);
    }
    drop(sender);
    let mut stopped = false;
    for outcome in receiver {
        if !each(outcome?) {
            stopped = true;
            break;
        }
    }
    for mut child in children {
        if stopped {
            // Only the workers this run started, each by its handle.
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| format!("waiting for a worker: {e}"))?;
        // A worker exits non-zero when it saw a violation: that seed's
        // outcome has already been counted from its line.
        if !stopped && status.code().is_none() {
            return Err(format!("a worker died: {status}"));
        }
    }
    Ok(())
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
    if args.worker {
        let mut out = std::io::stdout().lock();
        let mut failed = false;
        run_seeds(&args, &options, total, |outcome| {
            failed |= !outcome.violations.is_empty();
            let written = writeln!(out, "{}", tally_sim::jobs::encode(&outcome)).and_then(|()| out.flush());
            written.is_ok() && (args.keep_going || outcome.violations.is_empty())
        });
        return if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
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
    let mut aggregate = Aggregate::default();
    let mut first_failure: Option<SeedOutcome> = None;
    run_seeds(&args, &options, total, |outcome| {
        aggregate.add(&outcome);
        progress.inc(1);
        progress.set_message(format!("violations: {}", aggregate.failures.len()));
        if outcome.violations.is_empty() {
            return true;
        }
        if first_failure.as_ref().is_none_or(|f| f.seed > outcome.seed) {
            first_failure = Some(outcome);
        }
        args.keep_going
    });
    progress.finish_and_clear();
    let wall = started.elapsed();
    let text = report::render(&aggregate, &header, wall, usize::try_from(args.jobs).expect("at most 256"));
    print!("{text}");
    let mut failure_text = String::new();
    if let Some(failure) = first_failure {
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
