#!/usr/bin/env bash
# The simulation's mutant check: builds tally-sim with the deliberate bugs
# compiled in (`--cfg tally_mutants`, its own target directory), selects
# each bug in turn with TALLY_MUTANT, and requires the simulation to FIND a
# violation within SIM_MUTANT_SEEDS seeds (default 1,000; it stops at the
# first). A mutant that survives means an oracle that cannot fail; this
# script then exits non-zero. Each line says which invariant caught what,
# and after how many seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg tally_mutants"
export CARGO_TARGET_DIR=target/sim-mutants
seeds=${SIM_MUTANT_SEEDS:-1000}

cargo build --release -p tally-sim
sim=$CARGO_TARGET_DIR/release/tally-sim

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
)

survivors=0
for entry in "${mutants[@]}"; do
  name=${entry%%:*}
  what=${entry#*:}
  log=$(mktemp)
  if TALLY_MUTANT=$name "$sim" --seeds "$seeds" >"$log" 2>&1; then
    echo "mutant $name ($what): NOT caught in $seeds seeds"
    survivors=$((survivors + 1))
  else
    failed_seed=$(sed -nE 's/^FAILED: seed ([0-9]+)$/\1/p' "$log" | head -n 1)
    invariant=$(sed -nE 's/^  violated invariant: (.*)$/\1/p' "$log" | head -n 1)
    check=$(sed -nE 's/^    check: (.*)$/\1/p' "$log" | head -n 1)
    if [ -z "$failed_seed" ]; then
      echo "mutant $name: the simulation failed without a violation (crash?)"
      tail -n 20 "$log"
      survivors=$((survivors + 1))
    else
      echo "mutant $name ($what): caught at seed $failed_seed ($((failed_seed + 1)) seeds) by [$invariant] ($check)"
    fi
  fi
  rm -f "$log"
done

if [ "$survivors" -ne 0 ]; then
  echo "$survivors mutant(s) survived the simulation"
  exit 1
fi
echo "all ${#mutants[@]} mutants caught by the simulation"
