//! Seeds on several processes: `tally-sim --jobs N` runs N worker processes
//! of itself, each on every N-th seed, and sums what they report.
//!
//! Processes, not threads: tokio's task ids come from one counter per
//! process (see `run::align_task_ids`), so seeds run on parallel threads of
//! one process would not replay. A worker (`--worker`, hidden) runs its
//! seeds one at a time and prints one JSON line per seed ([`encode`]); the
//! parent reads them back ([`decode`]) into the same [`SeedOutcome`] a seed
//! run in-process gives, so the report does not know how it was run.

use std::time::Duration;

use serde_json::{Value, json};

use crate::journal::{Count, Counts};
use crate::run::SeedOutcome;
use crate::shared::Violation;

fn violations(list: &[Violation]) -> Value {
    list.iter().map(|v| json!([v.invariant, v.check, v.detail])).collect()
}

/// One seed's outcome as one line of JSON (no newline inside).
pub fn encode(outcome: &SeedOutcome) -> String {
    json!({
        "seed": outcome.seed,
        "hash": outcome.hash,
        "counts": Count::ALL.iter().map(|&c| outcome.counts.get(c)).collect::<Vec<u64>>(),
        "simulated_ms": u64::try_from(outcome.simulated.as_millis()).unwrap_or(u64::MAX),
        "steps": outcome.steps,
        "violations": violations(&outcome.violations),
        "known": violations(&outcome.known),
        "events": outcome.events,
        "plan": outcome.plan,
    })
    .to_string()
}

fn decode_violations(value: &Value) -> Result<Vec<Violation>, String> {
    let list = value.as_array().ok_or("violations: not a list")?;
    list.iter()
        .map(|v| {
            let field = |i: usize| v.get(i).and_then(Value::as_str).ok_or("violation: not three strings");
            // A violation's check names a `&'static str` of the oracle. The
            // parent leaks the few it receives: only failing seeds carry any,
            // and a run stops at the first unless told to keep going.
            let check: &'static str = String::leak(field(1)?.to_owned());
            Ok(Violation::new(field(0)?, check, field(2)?.to_owned()))
        })
        .collect()
}

/// The outcome a worker's line describes.
pub fn decode(line: &str) -> Result<SeedOutcome, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("bad worker line: {e}"))?;
    let number = |key: &str| value.get(key).and_then(Value::as_u64).ok_or(format!("worker line without {key}"));
    let list = value.get("counts").and_then(Value::as_array).ok_or("worker line without counts")?;
    if list.len() != Count::ALL.len() {
        return Err(format!("worker line with {} counts, expected {}", list.len(), Count::ALL.len()));
    }
    let mut counts = Counts::default();
    for (&count, n) in Count::ALL.iter().zip(list) {
        counts.add(count, n.as_u64().ok_or("a count is not a number")?);
    }
    let events = value.get("events").and_then(Value::as_array).ok_or("worker line without events")?;
    Ok(SeedOutcome {
        seed: number("seed")?,
        hash: number("hash")?,
        counts,
        simulated: Duration::from_millis(number("simulated_ms")?),
        steps: number("steps")?,
        violations: decode_violations(value.get("violations").unwrap_or(&Value::Null))?,
        known: decode_violations(value.get("known").unwrap_or(&Value::Null))?,
        events: events.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        plan: value.get("plan").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's report survives the trip between processes: the parent
    /// sums exactly what the worker ran.
    #[test]
    fn an_outcome_round_trips_through_a_worker_line() {
        let mut counts = Counts::default();
        counts.add(Count::Operations, 30);
        counts.add(Count::HostCrashes, 2);
        let outcome = SeedOutcome {
            seed: 7,
            hash: u64::MAX - 3,
            counts,
            simulated: Duration::from_millis(6_540),
            steps: 654,
            violations: vec![Violation::new("1. balance", "a check", "line one\nline \"two\"".to_owned())],
            known: Vec::new(),
            events: vec!["  10ms sim: start".to_owned()],
            plan: "net 0..3ms".to_owned(),
        };
        let line = encode(&outcome);
        assert!(!line.contains('\n'));
        let back = decode(&line).expect("decodes");
        assert_eq!((back.seed, back.hash, back.steps, back.simulated), (7, u64::MAX - 3, 654, outcome.simulated));
        assert_eq!(back.counts, outcome.counts);
        assert_eq!(back.violations.len(), 1);
        assert_eq!(back.violations[0].to_string(), outcome.violations[0].to_string());
        assert_eq!((back.events, back.plan), (outcome.events, outcome.plan));
        assert!(decode("{\"seed\": 1}").is_err());
    }
}
