#!/usr/bin/env bash
# The lock manager's loom proofs and their mutant check.
#
# 1. Builds crates/tally-lock/tests/loom.rs twice: plain (`--cfg loom`) and
#    with the deliberate bugs compiled in (`--cfg loom`, the `mutants` feature).
# 2. Selects each lock mutant with TALLY_MUTANT and requires the loom model
#    aimed at it to FAIL for the right reason. A mutant that survives means a
#    proof that cannot fail; the script then exits non-zero.
# 3. Runs the whole loom suite exhaustively (every model prints its iteration
#    count and time), and, alongside it on the second core, the suite built
#    with the mutants compiled in but none selected, which must pass too: the
#    mutant build alone must not change behaviour.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
# The models ignore these (they force an exhaustive search), but a log that
# shows a bound or a cap would cast doubt on the word "exhaustive".
unset LOOM_MAX_PREEMPTIONS LOOM_MAX_PERMUTATIONS LOOM_MAX_DURATION LOOM_CHECKPOINT_FILE TALLY_MUTANT

PLAIN_FEATURES=""
PLAIN_DIR=target/loom
MUTANT_FEATURES="mutants"
MUTANT_DIR=target/loom-mutants

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

started=$(date +%s.%N)
step() {
  echo
  echo "== $* (at +$(awk -v s="$started" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')s)"
}

# loom_test FEATURES TARGET_DIR [cargo test arguments...]
loom_test() {
  local features=$1 dir=$2
  shift 2
  RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$dir" cargo test -p tally-lock --release --features "$features" --test loom "$@"
}

step "build: loom suite"
loom_test "$PLAIN_FEATURES" "$PLAIN_DIR" --no-run
step "build: loom suite with the mutants compiled in"
loom_test "$MUTANT_FEATURES" "$MUTANT_DIR" --no-run

step "mutants: each must make its model fail"
# name|model aimed at it|what the failure must say|what the bug is
mutants=(
  "lock_lost_wakeup|no_lost_wakeup_on_release|deadlock; threads|a release marks the key free without handing it on or waking the head waiter"
  "lock_lifo|fifo_grant_order|FIFO violated|hand-off goes to the newest waiter instead of the oldest"
  "lock_cancel_drops_grant|dropped_async_wait_racing_release_loses_no_grant|deadlock; threads|a wait withdrawn after a hand-off drops the grant instead of passing it on"
  "lock_fence_per_key|fences_strictly_increase|granted after|fencing tokens restart when a key goes idle"
  "lock_unsorted|opposite_order_takers_never_deadlock|deadlock; threads|keys are taken in the order given, not the global order"
  "lock_timeout_keeps_prefix|timeout_while_holding_a_prefix_releases_it|table.is_idle()|a timed-out acquisition keeps the keys it had taken"
  "lock_double_grant|mutual_exclusion|release of a key that is not held|a held key without waiters is granted to a newcomer too"
  "lock_timeout_strands_grant|timeout_racing_release_loses_no_grant|table.is_idle()|a wait handed its key as its deadline passed reports a timeout and strands the grant"
  "lock_task_not_woken|async_waiter_is_woken_by_the_hand_off|deadlock; threads|a hand-off to an async waiter never calls its waker"
  "lock_stale_release|stale_release_never_ends_a_later_grant|a stale release ended a later grant|a guard whose lease ran out releases the key, ending a later grant"
)
survivors=0
for entry in "${mutants[@]}"; do
  IFS='|' read -r name model expected what <<<"$entry"
  log="$logs/mutant-$name.log"
  if TALLY_MUTANT=$name loom_test "$MUTANT_FEATURES" "$MUTANT_DIR" -- --exact "$model" --nocapture --test-threads=1 \
    >"$log" 2>&1; then
    echo "mutant $name: NOT caught ($model passed; the bug: $what)"
    survivors=$((survivors + 1))
  elif grep -qF "$expected" "$log"; then
    echo "mutant $name: caught ($model failed with \"$expected\"; the bug: $what)"
  else
    echo "mutant $name: NOT caught ($model failed, but not with \"$expected\"):"
    tail -n 20 "$log"
    survivors=$((survivors + 1))
  fi
done
if [ "$survivors" -ne 0 ]; then
  echo "$survivors lock mutant(s) survived"
  exit 1
fi

step "loom suite, exhaustive; alongside: the mutant build with no mutant selected"
loom_test "$MUTANT_FEATURES" "$MUTANT_DIR" -- --nocapture --test-threads=1 >"$logs/unselected.log" 2>&1 &
unselected_pid=$!
suite_ok=1
loom_test "$PLAIN_FEATURES" "$PLAIN_DIR" -- --nocapture --test-threads=1 || suite_ok=0
unselected_ok=1
wait "$unselected_pid" || unselected_ok=0

step "mutant build, no mutant selected: its models"
grep -E '^(test .*\.\.\. )?loom model |^test result' "$logs/unselected.log" || true
if [ "$unselected_ok" -ne 1 ]; then
  echo "the loom suite FAILED when built with the mutants feature and no TALLY_MUTANT:"
  tail -n 40 "$logs/unselected.log"
  exit 1
fi
if [ "$suite_ok" -ne 1 ]; then
  echo "the loom suite FAILED"
  exit 1
fi

step "done"
echo "loom: all models passed exhaustively; all ${#mutants[@]} lock mutants caught; the unselected mutant build passes"
