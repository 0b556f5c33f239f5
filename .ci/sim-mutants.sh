#!/usr/bin/env bash
# The simulation's mutant check: builds tally-sim with the deliberate bugs
# compiled in (the `mutants` feature; only the tally crates build again), selects
# each bug in turn with TALLY_MUTANT, and requires the simulation to FIND a
# violation within SIM_MUTANT_SEEDS seeds (default 1,000; it stops at the
# first). A mutant that survives means an oracle that cannot fail; this
# script then exits non-zero. Each line says which invariant caught what,
# and after how many seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/mutant-judge.sh

seeds=${SIM_MUTANT_SEEDS:-1000}

cargo build --release -p tally-sim --features mutants
sim=${CARGO_TARGET_DIR:-target}/release/tally-sim
control_run "the simulation with the mutants compiled in, ${SIM_CONTROL_SEEDS:-100} seeds" \
  "$sim" --seeds "${SIM_CONTROL_SEEDS:-100}"

# name: what the bug is
mutants=(
  "check_then_act:the decision is made under one lock acquisition and written under another"
  "double_refund:cancel accepts an already-cancelled payment and refunds it again"
  "idem_ignores_inflight:idempotency admission ignores a live in-flight record"
  "retry_unknown_confirm:an unclear gateway confirm is sent again instead of looked up (seed 003)"
  "release_key_on_disconnect:tally-http forgets the key when the client goes away, so the retry runs again"
  "retry_ambiguous_commit:an ambiguous commit is retried like a conflict, without its idempotency record"
  "stock_check_then_act:an order reads and takes stock without locking the product (seed 004)"
  "expire_paid_order:the expiry sweeper does not re-check, under its lock, that the order is still unpaid"
  "seat_double_hold:a seat already held or sold can be held by another order"
  "queue_over_admit:a queue refresh promotes one token more than the free slots"
  "payment_key_unbound:a confirm claims a gateway payment key another payment holds (issue 10, hole 1)"
  "foreign_charge_adopted:a gateway answer about another order id is adopted as our charge (hole 1)"
  "reversal_after_refund:a gateway cancel reverses the payback only after the card was refunded (hole 2)"
  "payback_unheld:a gateway confirm does not hold the payback's room under max_balance before the charge (hole 2)"
  "refund_forgotten:a charge of the wrong amount fails the payment without a durable refund (hole 5)"
  "window_rollback:a payment stamped before the wallet's window rolls the window back (hole 6)"
  "seat_hoarding:a token's live orders may hold more seats than max_seats_per_token (hole 7)"
  "fence_unchecked:the store skips its fencing-token check: a zombie's commit lands after its lock lease went to another (issue 14)"
  "settled_phase_refused:the retry of a confirm or cancel answered 503 and settled by the completer is refused 409 instead of answered with its charge or refund"
  "other_key_answered:a second confirm or cancel (another request, or another payment key) while a gateway phase is in flight is answered with its outcome instead of refused 409"
  "late_charge_kept:a confirm given up on fails its payment unwatched, so a charge the gateway carries out later is never refunded (hole 11)"
  "batch_stale_balance:a group commit serves a request the record as first loaded, not as the batch left it (issue 12)"
  "batch_answers_before_commit:a group commit answers its requests before its commit's outcome is known (issue 12)"
  "batch_shared_lock_set:a group commit hands each request the whole batch's lock set, so an order's cancel takes another request's payment for its order's and is answered 404 (session 13)"
)
# Not here: completer_gives_up and balance_uncapped (nor watch_unthrottled
# and watch_backoff_unbounded: they cost lookups and latency, not money). The simulation's
# completer batches never hold a payment whose settlement fails once the
# other fixes are in, and no workload balance comes near 10^15; the
# use-case tests in .ci/mutants.sh pin both.

# first_violation LOG: the seed that failed first, and which invariant and
# check caught it, if one did.
first_violation() {
  local failed_seed invariant check
  # The first match of each, with sed quitting there: a `| head` would cut
  # sed's output short, and pipefail would fail the script on it.
  failed_seed=$(sed -nE '/^FAILED: seed [0-9]+$/{s/^FAILED: seed ([0-9]+)$/\1/p;q;}' "$1")
  invariant=$(sed -nE '/^  violated invariant: /{s/^  violated invariant: (.*)$/\1/p;q;}' "$1")
  check=$(sed -nE '/^    check: /{s/^    check: (.*)$/\1/p;q;}' "$1")
  if [ -n "$failed_seed" ]; then
    echo "at seed $failed_seed ($((failed_seed + 1)) seeds) by [$invariant] ($check)"
  fi
}

MUTANT_BUDGET="in $seeds seeds"
for entry in "${mutants[@]}"; do
  judge_mutant "$entry" first_violation "$sim" --seeds "$seeds"
done

mutant_verdict ${#mutants[@]} "mutants (by the simulation)"
