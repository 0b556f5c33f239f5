//! The summary over many seeds: what ran, what was injected, what the runs
//! reached, and what broke — the text a person reads after a nightly run.

use std::fmt::Write as _;
use std::time::Duration;

use crate::journal::{Count, Counts, Section};
use crate::run::SeedOutcome;
use crate::shared::Violation;

/// Sums over seeds.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    pub seeds: u64,
    pub first_seed: Option<u64>,
    pub last_seed: Option<u64>,
    pub simulated: Duration,
    pub steps: u64,
    pub counts: Counts,
    /// Seeds with violations, with the first few violations of each.
    pub failures: Vec<(u64, Vec<Violation>)>,
    /// Violations of known, reported bugs that this run was told to accept.
    pub known: Vec<(u64, Violation)>,
}

impl Aggregate {
    pub fn add(&mut self, outcome: &SeedOutcome) {
        self.seeds += 1;
        self.first_seed = Some(self.first_seed.map_or(outcome.seed, |s| s.min(outcome.seed)));
        self.last_seed = Some(self.last_seed.map_or(outcome.seed, |s| s.max(outcome.seed)));
        self.simulated += outcome.simulated;
        self.steps += outcome.steps;
        self.counts.merge(&outcome.counts);
        if !outcome.violations.is_empty() {
            self.failures.push((outcome.seed, outcome.violations.clone()));
        }
        self.known.extend(outcome.known.iter().map(|v| (outcome.seed, v.clone())));
    }
}

/// Per-second rate of `count` over `wall`, as an integer.
fn rate(count: u64, wall: Duration) -> u64 {
    let millis = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1000) / millis
}

fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{}.{:03}s", secs, d.subsec_millis()),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60),
    }
}

/// The report's text. `header` says what was run.
pub fn render(aggregate: &Aggregate, header: &str, wall: Duration, jobs: usize) -> String {
    let mut out = String::new();
    let counts = &aggregate.counts;
    let _ = writeln!(out, "tally-sim report");
    let _ = writeln!(out, "  {header}");
    let _ = writeln!(
        out,
        "  seeds run: {} ({}..={}), wall {} on {jobs} process(es), one thread each: {} seeds/s, {} operations/s",
        aggregate.seeds,
        aggregate.first_seed.unwrap_or(0),
        aggregate.last_seed.unwrap_or(0),
        duration(wall),
        rate(aggregate.seeds, wall),
        rate(counts.get(Count::Operations), wall),
    );
    let _ = writeln!(out, "  simulated time: {} in {} steps", duration(aggregate.simulated), aggregate.steps);
    for (section, title) in
        [(Section::Volume, "workload"), (Section::Fault, "faults injected"), (Section::Coverage, "coverage")]
    {
        let _ = writeln!(out, "  {title}:");
        for count in Count::ALL.into_iter().filter(|c| c.section() == section) {
            let marker = if section == Section::Coverage && counts.get(count) == 0 { "  (never reached)" } else { "" };
            let _ = writeln!(out, "    {:>9}  {}{marker}", counts.get(count), count.name());
        }
    }
    if !aggregate.known.is_empty() {
        let _ = writeln!(out, "  known issues accepted ({} occurrence(s)):", aggregate.known.len());
        let (seed, first) = &aggregate.known[0];
        let _ = writeln!(out, "    first, seed {seed}: {first}");
    }
    let failing = aggregate.failures.len();
    let _ = writeln!(out, "  violations: {} seed(s)", failing);
    for (seed, violations) in aggregate.failures.iter().take(10) {
        for violation in violations.iter().take(3) {
            let _ = writeln!(out, "    seed {seed}: {violation}");
        }
    }
    let _ = writeln!(out, "  verdict: {}", if failing == 0 { "PASS" } else { "FAIL" });
    out
}
