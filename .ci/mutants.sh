#!/usr/bin/env bash
# The mutant check for the use cases: builds the shuttle suite with the
# deliberate bugs compiled in (the `mutants` feature), selects each bug in turn
# with TALLY_MUTANT, and requires the suite to FAIL. A mutant that survives
# means a proof that cannot fail; this script then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/mutant-judge.sh

export RUSTFLAGS="--cfg shuttle"
export CARGO_TARGET_DIR=target/shuttle
# Each bug is found within a few schedules; 600 (x 2 schedulers) leaves a
# wide margin (the rarest, fence_unchecked, needs a lease to run out: about
# 3 % of the zombie scenario's schedules).
export SHUTTLE_ITERATIONS=${MUTANT_SHUTTLE_ITERATIONS:-600}

cargo test -p tally-mem --release --features mutants --test shuttle --no-run
control_run "the shuttle suite with the mutants compiled in" \
  env SHUTTLE_ITERATIONS="${MUTANT_CONTROL_ITERATIONS:-200}" \
  cargo test -p tally-mem --release --features mutants --test shuttle -- --test-threads=2

# name: what the bug is
mutants=(
  "check_then_act:the decision is made under one lock acquisition and written under another"
  "double_refund:cancel accepts an already-cancelled payment and refunds it again"
  "idem_ignores_inflight:idempotency admission ignores a live in-flight record"
  "retry_unknown_confirm:an unclear gateway confirm is sent again instead of looked up (seed 003)"
  "stock_check_then_act:an order checks and takes stock without holding the product (seed 004)"
  "expire_paid_order:the expiry sweeper gives stock back without re-checking that the order is still unpaid (seed 004)"
  "seat_double_hold:a held or sold seat can be held by another order (seed 002)"
  "queue_over_admit:the queue promotes one token more than its free slots (seed 002)"
  "payment_key_unbound:a confirm claims a gateway payment key another payment holds (hole 1)"
  "reversal_after_refund:a gateway cancel reverses the payback only after the card was refunded (hole 2)"
  "payback_unheld:a gateway confirm does not hold the payback's room under max_balance before the charge (hole 2)"
  "seat_hoarding:a token's live orders may hold more seats than max_seats_per_token (hole 7)"
  "batch_stale_balance:a group commit serves a request the record as first loaded, not as the batch left it (issue 12)"
  "batch_answers_before_commit:a group commit answers its requests before its commit's outcome is known (issue 12)"
  "batch_unlocks_before_commit,fence_unchecked:a group commit lets its locks go before its commit, with the store's fencing check off (fencing alone masks the early release): a request running alone books a second line at the wallet's position (issue 12)"
  "lock_wait_unbounded:the in-memory lock manager waits without a deadline, so a request behind a stuck holder waits forever (issue 14)"
  "fence_unchecked:the in-memory store skips its fencing-token check: a zombie's commit under shuttle's lease timers lands on a wallet its successor wrote (issue 14)"
  "refusal_unvalidated:a refusal decided without locks is answered on whatever it read, without checking the reads are still current (hole 12: a racing cancel refused insufficient_balance)"
)

# failing_tests LOG: "by" the tests that failed, if any did.
failing_tests() {
  local failed
  failed=$(grep -E '^test .* FAILED$' "$1" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | paste -sd, -)
  if [ -n "$failed" ]; then echo "by $failed"; fi
}

for entry in "${mutants[@]}"; do
  judge_mutant "$entry" failing_tests cargo test -p tally-mem --release --features mutants --test shuttle -- --test-threads=2
done

# The holes that are not races are pinned by the sequential use-case tests
# (and the group commit's exact outcomes by the deterministic batch tests).
# They use std's primitives, so they build without `--cfg shuttle`.
usecase_mutants=(
  "foreign_charge_adopted:a gateway answer about another order id is adopted (hole 1)"
  "completer_gives_up:the completer abandons its batch at the first payment it cannot settle (hole 4)"
  "refund_forgotten:a charge of the wrong amount fails the payment without a durable refund (hole 5)"
  "window_rollback:a payment stamped before the wallet's window rolls the window back (hole 6)"
  "balance_uncapped:a wallet without a maximum passes the 10^15 cap (hole 8)"
  "fence_unchecked:the in-memory store skips its fencing-token check, so a paused lock holder writes after its lease went to another (issue 14)"
  "settled_phase_refused:the retry of a confirm or cancel answered 503 and settled by the completer is refused 409 instead of answered with its charge or refund"
  "other_key_answered:a second confirm or cancel (another request, or another payment key) while a gateway phase is in flight is answered with its outcome instead of refused 409"
  "late_charge_kept:a confirm given up on fails its payment unwatched, so a charge the gateway carries out later is never refunded (hole 11)"
  "watch_unthrottled:a watched payment is claimed and looked up on every completer pass, an hour of lookups per given-up confirm (hole 11's cost)"
  "watch_backoff_unbounded:a watched payment's lookups back off without a bound, so a late charge may wait half the watch to be found (hole 11)"
  "batch_shared_lock_set:a group commit hands each request the whole batch's lock set, so an order's cancel takes another request's payment for its order's and is answered 404 (session 13)"
  "seats_before_token:a seat order judges its seats before the caller's token, so a caller without an active token is answered 409 seat_unavailable, stored, instead of 403 (session 14)"
  "invalid_state_unstored:a confirm refused 409 invalid_state (its body does not fit its payment's method) is not stored, so its retry runs again and a corrected body under the key runs (session 14)"
  "refund_before_reversal:a wallet payment's refund is always booked before its payback reversal, so a wallet at its ceiling is refused its refund max_balance_exceeded (session 14)"
)
# The workspace's own target directory: only the tally crates build again.
usecases=(env -u RUSTFLAGS -u CARGO_TARGET_DIR cargo test -p tally-mem --features mutants --test usecases --test batch)
"${usecases[@]}" --no-run
control_run "the use-case tests with the mutants compiled in" "${usecases[@]}"
for entry in "${usecase_mutants[@]}"; do
  judge_mutant "$entry" failing_tests "${usecases[@]}"
done

mutant_verdict $(( ${#mutants[@]} + ${#usecase_mutants[@]} )) "use-case mutants"
