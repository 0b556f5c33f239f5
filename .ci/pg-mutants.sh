#!/usr/bin/env bash
# The SQL mutant check: builds the end-to-end suite and the chaos harness
# with the deliberate SQL bugs of tally-pg compiled in (the `mutants`
# feature), runs a control (no mutant
# selected: both must pass), then selects each bug in turn with
# TALLY_MUTANT and requires it to be caught: first by the end-to-end suite
# on the mutant's strategy, else (with PG_MUTANT_CHAOS=1, as the nightly
# run does) by the chaos harness on it. Each mutant must be caught by the
# check MUTANT_EXPECTED names for it. Every one is caught by an end-to-end
# test today, so CI runs the end-to-end half only.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/mutant-judge.sh

chaos_ops=${PG_MUTANT_CHAOS_OPS:-600}
with_chaos=${PG_MUTANT_CHAOS:-0}

cargo test -p tally-tests --features mutants --test e2e --no-run
chaos=${CARGO_TARGET_DIR:-target}/release/tally-chaos
if [ "$with_chaos" = 1 ]; then
  cargo build --release -p tally-chaos --features mutants
fi

# run_mutant STRATEGY: the end-to-end suite on STRATEGY, then (if it
# passed, and with PG_MUTANT_CHAOS=1) the chaos harness on it; fails if
# either caught something.
run_mutant() {
  cargo test -p tally-tests --features mutants --test e2e -- "$1::" --test-threads=2 || return 1
  if [ "$with_chaos" = 1 ]; then
    echo "== chaos"
    "$chaos" --strategy "$1" --ops "$chaos_ops" --instances 2 --seed "${PG_MUTANT_SEED:-7}" --time-budget 300
  fi
}

# caught_by LOG: the end-to-end tests that failed, or the chaos checks that
# reported a violation.
caught_by() {
  local failed checks
  failed=$(grep -E '^test .* FAILED$' "$1" | sed -E 's/^test ([^ ]+) .*/\1/' | paste -sd, -)
  if [ -n "$failed" ]; then
    echo "by e2e $failed"
    return
  fi
  checks=$(grep -E '^  VIOLATION ' "$1" | sed -E 's/^  VIOLATION \[[^]]*\] ([^:]*):.*$/\1/' | sort -u | paste -sd';' -)
  if [ -n "$checks" ]; then echo "by chaos: $checks"; fi
}

if [ "$with_chaos" = 1 ]; then
  control_run "e2e and chaos on every strategy, no mutant" \
    bash -c "cargo test -p tally-tests --features mutants --test e2e -- --test-threads=2 && \
      $chaos --strategy all --ops $chaos_ops --instances 2 --seed ${PG_MUTANT_SEED:-7} --time-budget 600"
else
  control_run "e2e on every strategy, no mutant" cargo test -p tally-tests --features mutants --test e2e -- --test-threads=2
fi

# strategy|name: what the bug is
mutants=(
  "pessimistic|pg_drop_for_update:pessimistic loads take no row lock (FOR UPDATE dropped)"
  "optimistic|pg_drop_version_guard:the optimistic wallet write does not compare the loaded version"
  "atomic|pg_drop_balance_guard:the atomic wallet write does not require the balance it decided on"
  "pessimistic|pg_nowait_waits:admission waits for a key's row instead of answering in use (NOWAIT dropped)"
  "optimistic|pg_conflict_is_success:a serialization failure or deadlock is taken for a statement that succeeded"
  "redis|pg_skip_fence_claim:begin_locked claims no fencing token (a holder past its lease is not refused)"
)
# Which check must catch each (an extended regex over the "caught …" text).
# The row-lock and deadlock properties have end-to-end tests of their own:
# under the chaos workload those three bugs only change timings (a missing
# lock becomes a retried version conflict; a waiting duplicate gets its
# replay later; a deadlock needs two writers crossing on two rows).
MUTANT_EXPECTED=(
  [pg_drop_for_update]='e2e .*pessimistic::loaded_rows_lock_as_the_strategy_promises'
  [pg_drop_version_guard]='e2e .*optimistic::concurrent_top_ups_sum_exactly'
  [pg_drop_balance_guard]='e2e .*atomic::balance_for_k_pays_exactly_k'
  [pg_nowait_waits]='e2e .*pessimistic::loaded_rows_lock_as_the_strategy_promises'
  [pg_conflict_is_success]='e2e .*optimistic::crossed_writers_deadlock_and_exactly_one_is_told'
  [pg_skip_fence_claim]='e2e .*redis::a_holder_paused_(before_its_transaction_is_fenced|mid_transaction_makes_the_next_one_wait)'
)

for entry in "${mutants[@]}"; do
  strategy=${entry%%|*}
  judge_mutant "${entry#*|}" caught_by run_mutant "$strategy"
done

mutant_verdict ${#mutants[@]} "SQL mutants"
