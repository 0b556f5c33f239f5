#!/usr/bin/env bash
# The SQL mutant check: builds the end-to-end suite and the chaos harness
# with the deliberate SQL bugs of tally-pg compiled in (`--cfg
# tally_mutants`, their own target directory), runs a control (no mutant
# selected: both must pass), then selects each bug in turn with
# TALLY_MUTANT and requires it to be caught: first by the end-to-end suite
# on the mutant's strategy, else by the chaos harness on it. Each mutant
# must be caught by the check MUTANT_EXPECTED names for it.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/mutant-judge.sh

export RUSTFLAGS="--cfg tally_mutants" CARGO_TARGET_DIR=target/pg-mutants
chaos_ops=${PG_MUTANT_CHAOS_OPS:-600}

cargo test -p tally-tests --test e2e --no-run
cargo build --release -p tally-chaos
chaos=$CARGO_TARGET_DIR/release/tally-chaos

# run_mutant STRATEGY: the end-to-end suite on STRATEGY, then (if it
# passed) the chaos harness on it; fails if either caught something.
run_mutant() {
  cargo test -p tally-tests --test e2e -- "$1::" --test-threads=2 || return 1
  echo "== chaos"
  "$chaos" --strategy "$1" --ops "$chaos_ops" --instances 2 --seed "${PG_MUTANT_SEED:-7}" --time-budget 300
}

# caught_by LOG: the end-to-end tests that failed, or the chaos checks that
# reported a violation.
caught_by() {
  local failed checks
  failed=$(grep -E '^test .* FAILED$' "$1" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | paste -sd, -)
  if [ -n "$failed" ]; then
    echo "by e2e $failed"
    return
  fi
  checks=$(grep -E '^  VIOLATION ' "$1" | sed -E 's/^  VIOLATION \[[^]]*\] ([^:]*):.*$/\1/' | sort -u | paste -sd';' -)
  if [ -n "$checks" ]; then echo "by chaos: $checks"; fi
}

control_run "e2e and chaos on every strategy, no mutant" \
  bash -c "cargo test -p tally-tests --test e2e -- --test-threads=2 && \
    $chaos --strategy all --ops $chaos_ops --instances 2 --seed ${PG_MUTANT_SEED:-7} --time-budget 600"

# strategy|name: what the bug is
mutants=(
  "pessimistic|pg_drop_for_update:pessimistic loads take no row lock (FOR UPDATE dropped)"
  "optimistic|pg_drop_version_guard:the optimistic wallet write does not compare the loaded version"
  "atomic|pg_drop_balance_guard:the atomic wallet write does not require the balance it decided on"
  "pessimistic|pg_nowait_waits:admission waits for a key's row instead of answering in use (NOWAIT dropped)"
  "pessimistic|pg_conflict_is_success:a serialization failure or deadlock is taken for a statement that succeeded"
)
# Measured so far (docs/chaos.md): only pg_drop_version_guard is caught, by
# the chaos harness's bank check and the core's checker; the other four
# survived the harness at 600 operations, and the end-to-end half of this
# script has not been run against them yet. Entries are added as catchers
# are confirmed; a mutant without one is judged on being caught at all.
MUTANT_EXPECTED=(
  [pg_drop_version_guard]='e2e optimistic::|chaos: .*(bank check|invariant checker)'
)

for entry in "${mutants[@]}"; do
  strategy=${entry%%|*}
  judge_mutant "${entry#*|}" caught_by run_mutant "$strategy"
done

mutant_verdict ${#mutants[@]} "SQL mutants"
