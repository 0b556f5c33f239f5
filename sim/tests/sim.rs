//! The simulation's own tests. Each names the promise it protects and
//! asserts exact outcomes; none can pass by doing nothing (each one also
//! checks that the runs did the work it is about).

use tally_sim::journal::{Count, Counts};
use tally_sim::plan::{KnownIssue, Options, Plan, Profile};
use tally_sim::run::{SeedOutcome, run_seed};

fn options(profile: Profile) -> Options {
    Options { profile, ..Options::default() }
}

fn accepting_known(profile: Profile) -> Options {
    Options { accept_known: vec![KnownIssue::StuckConfirming], ..options(profile) }
}

fn assert_clean(outcome: &SeedOutcome) {
    assert!(
        outcome.violations.is_empty(),
        "seed {} broke: {:#?}\nlast events:\n{}",
        outcome.seed,
        outcome.violations,
        outcome.events.join("\n")
    );
}

/// Runs each seed with its options, requires every one clean, and requires
/// each of `reached` to have happened in at least one of them.
fn assert_clean_and_reached(runs: impl IntoIterator<Item = (u64, Options)>, reached: &[Count]) {
    let mut total = Counts::default();
    for (seed, options) in runs {
        let outcome = run_seed(seed, &options);
        assert_clean(&outcome);
        total.merge(&outcome.counts);
    }
    for &count in reached {
        assert!(total.get(count) > 0, "never reached: {}", count.name());
    }
}

/// Liveness and durability with nothing injected: every operation of a
/// fault-free seed is answered (a success or a final refusal), none is
/// abandoned, and the oracle finds nothing.
#[test]
fn fault_free_seeds_complete_every_operation() {
    for seed in 0..4 {
        let outcome = run_seed(seed, &options(Profile::None));
        assert_clean(&outcome);
        let counts = &outcome.counts;
        assert_eq!(counts.get(Count::Operations), 30, "seed {seed}");
        assert_eq!(counts.get(Count::OperationsCompleted), 30, "seed {seed}");
        assert_eq!(counts.get(Count::OperationsAbandoned), 0, "seed {seed}");
        assert_eq!(
            counts.get(Count::HostCrashes) + counts.get(Count::Partitions) + counts.get(Count::AmbiguousCommits),
            0
        );
        assert!(outcome.known.is_empty(), "seed {seed}: {:?}", outcome.known);
    }
}

/// Determinism: a seed fully determines the run — the same event log (hash)
/// and the same counters, also after other seeds ran in this process — and
/// different seeds make different runs.
#[test]
fn a_seed_replays_exactly() {
    let options = accepting_known(Profile::Heavy);
    let first = run_seed(11, &options);
    let _other = run_seed(12, &options);
    let again = run_seed(11, &options);
    assert_eq!(first.hash, again.hash);
    assert_eq!(first.counts, again.counts);
    assert_eq!(first.steps, again.steps);
    assert_ne!(first.hash, run_seed(13, &options).hash);
    // The heavy profile really injected faults into the run that replayed.
    assert!(first.counts.get(Count::HostCrashes) + first.counts.get(Count::Partitions) > 0);
}

/// Determinism across processes: a seed replayed by the binary, in a fresh
/// process, logs the same events and leaves the same final store (the hash
/// covers both) as in this test process after other seeds ran here; and
/// `--jobs 2` (two worker processes) runs exactly the seeds one process does.
#[test]
fn a_seed_replays_in_another_process_and_under_jobs() {
    let options = accepting_known(Profile::Heavy);
    let here = run_seed(11, &options);
    let binary = env!("CARGO_BIN_EXE_tally-sim");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary).args(args).output().expect("the binary runs");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let replay = run(&["--seed", "11", "--faults", "heavy", "--accept-known-issue", "stuck-confirming"]);
    assert!(replay.contains("the final store hashes "), "the hash covers the final store");
    assert!(
        replay.contains(&format!("event-log hash {:016x}", here.hash)),
        "seed 11 in another process differs from this one's {:016x}:\n{replay}",
        here.hash
    );
    let steps: u64 = (20..24).map(|seed| run_seed(seed, &options).steps).sum();
    let jobs = run(&[
        "--seeds",
        "4",
        "--first-seed",
        "20",
        "--jobs",
        "2",
        "--faults",
        "heavy",
        "--accept-known-issue",
        "stuck-confirming",
    ]);
    assert!(jobs.contains("seeds run: 4 (20..=23)"), "{jobs}");
    assert!(jobs.contains(&format!(" in {steps} steps")), "not the {steps} steps run here:\n{jobs}");
}

/// Invariants 1–4 and the history checks under every kind of fault: a
/// sample of heavy and swarm seeds judged clean (the known, reported bug
/// aside), while the faults and the interesting paths were really reached.
#[test]
fn faulty_seeds_keep_every_promise() {
    let heavy = (0..6).map(|seed| (seed, accepting_known(Profile::Heavy)));
    let swarm = (100..106).map(|seed| (seed, accepting_known(Profile::Swarm)));
    assert_clean_and_reached(
        heavy.chain(swarm),
        &[
            Count::HostCrashes,
            Count::Partitions,
            Count::AmbiguousCommits,
            Count::AttemptTimeouts,
            Count::ReplaysServed,
            Count::DuplicateInFlight409,
            Count::GatewayOutcomeUnknown,
        ],
    );
}

/// Invariants 5–8 end to end: swarm seeds order scarce stock and queued
/// seats, pay, cancel and abandon orders, and race the expiry sweeper; the
/// oracle finds nothing, and every path was really taken.
#[test]
fn inventory_seeds_keep_every_promise() {
    let swarm = options(Profile::Swarm);
    let racing = (212..).filter(|&seed| Plan::draw(seed, &swarm).inventory.races_expiry).take(2);
    assert_clean_and_reached(
        (200..212).chain(racing).map(|seed| (seed, swarm.clone())),
        &[
            Count::OrdersCreated,
            Count::OrdersPaid,
            Count::OutOfStock,
            Count::SeatUnavailable,
            Count::OrdersSwept,
            Count::ExpiryRaces,
        ],
    );
}

/// Issue 10's adversarial customer end to end: these seeds reuse payment
/// keys (their own and a pool shared across users and with another
/// merchant, who charges some of them first), spend their cashback and then
/// cancel, run at their `max_balance` and tight limits, pay across a UTC
/// midnight on servers whose clocks lag, hoard seats with one token, name
/// their own `payback_amount`, confirm one payment from two tabs with two
/// payment keys, and meet a gateway that charges the wrong amount. The
/// oracle finds nothing, and every one of those paths was taken. (Seed 43
/// joined when session 13's busy tabs redrew its clients' workload: its
/// gateway's wrong-amount charge is refunded.)
#[test]
fn adversarial_seeds_keep_every_promise() {
    assert_clean_and_reached(
        [4, 9, 43, 54, 60, 64, 69].map(|seed| (seed, options(Profile::Swarm))),
        &[
            Count::KeyReuseRefused,
            Count::SecondTabConfirms,
            Count::OtherTabRefused,
            Count::ForeignKeyFailed,
            Count::CashbackCancelRefused,
            Count::RefundsOwedResolved,
            Count::SeatLimitRefused,
            Count::MaxBalanceRefused,
            Count::LimitRefused,
            Count::PaybackAmountRefused,
            Count::PaymentsAcrossMidnight,
            Count::StampedBehindWindow,
        ],
    );
}

/// Invariant 1's recovery side, seed 1: a confirm that never reached the
/// gateway used to stay `confirming` forever (each completer claim restarted
/// the clock the give-up counted from). The give-up now counts from when the
/// confirm was sent, so the seed ends clean.
#[test]
fn a_confirm_the_gateway_never_got_is_failed_in_the_end() {
    assert_clean(&run_seed(1, &options(Profile::Swarm)));
}

/// Hole 11: seeds whose clock steps past the give-up while the gateway
/// delays a confirm. The confirm is given up on (by its request's own
/// lookup, or the completer's), then lands; the watch refunds it, and the
/// oracle finds every charge agreeing with its payment. Both paths were
/// really taken on these seeds (found by scanning seeds 0 to 200).
#[test]
fn a_charge_landing_after_the_give_up_is_refunded() {
    assert_clean_and_reached(
        [5, 12, 17].map(|seed| (seed, options(Profile::Swarm))),
        &[Count::LateSteps, Count::LateChargesRefunded],
    );
}

/// The mutant check's unit (run by `.ci/sim-mutants.sh` with
/// the `mutants` feature and `TALLY_MUTANT` set): the selected deliberate
/// bug is found within 1,000 seeds.
#[cfg(feature = "mutants")]
#[test]
fn the_selected_mutant_is_caught() {
    let Ok(mutant) = std::env::var("TALLY_MUTANT") else { return };
    let options = accepting_known(Profile::Swarm);
    let caught = (0..1000).find(|&seed| !run_seed(seed, &options).violations.is_empty());
    assert!(caught.is_some(), "mutant {mutant} survived 1,000 seeds");
}

/// How many of the first seeds with zombies [`zombies_are_fenced_off`] runs
/// (seeds 5, 13 and 14; the first already has a zombie fenced off).
const ZOMBIE_SEEDS: usize = 3;

/// Issue 14, item 3: zombies. On seeds that draw them, a server pauses at
/// `COMMIT` past its 1 s lock lease while another request is granted the
/// same keys and commits; the resumed zombie's commit is refused by the
/// store's fence (so nothing is lost or applied twice), and the oracle
/// finds nothing. Each path was really taken: zombies struck, and at least
/// one zombie commit was fenced off.
#[test]
fn zombies_are_fenced_off() {
    let swarm = options(Profile::Swarm);
    let zombies = (0..).filter(|&seed| !Plan::draw(seed, &swarm).db_faults.zombies.is_empty()).take(ZOMBIE_SEEDS);
    assert_clean_and_reached(
        zombies.map(|seed| (seed, swarm.clone())),
        &[Count::Zombies, Count::ZombiesFenced, Count::FencedCommits],
    );
}
