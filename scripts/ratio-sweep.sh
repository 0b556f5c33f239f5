#!/usr/bin/env bash
# Issue 12's client sweep: `scripts/ratio-table.sh` at each client count, then
# one summary table of the one-step rows (raw `c` against spread wallets, raw
# `b2` against one hot wallet), with each count's full table kept beside it.
# Each count is its own run of ratio-table.sh, so each ratio compares a raw
# pattern and Tally measured minutes apart on one cluster.
#
#   bash scripts/ratio-sweep.sh [duration] [clients...]   (defaults: 10s 1 4 16 64 128)
#
# 128 is the largest count: a raw pattern opens one connection per client,
# and the private cluster allows 200 (`tally serve`'s pool takes 16 more).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10s}
shift || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 4 16 64 128)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for clients in "${counts[@]}"; do
  echo "--- $clients clients" >&2
  bash scripts/ratio-table.sh "$clients" "$duration" >"$out/$clients.md"
done

# cell FILE ROW-PREFIX COLUMN: one cell of a ratio-table row (columns count from 1).
cell() { grep -F "| $2" "$1" | head -1 | awk -F'|' -v c="$(($3 + 1))" '{ gsub(/^ +| +$|\*/, "", $c); print $c }'; }

echo "Client sweep, one-step payments, $duration a run, default \`tally serve\`:"
echo
echo "| clients | raw c tx/s | spread movements/s | ratio | raw b2 tx/s | hot movements/s | ratio to b2 | p99 ms spread / hot |"
echo "|---:|---:|---:|---:|---:|---:|---:|---|"
for clients in "${counts[@]}"; do
  f=$out/$clients.md
  spread="spread over many wallets, one-step"
  hot="one hot wallet, one-step"
  b2=$(cell "$f" "$hot" 2 | cut -d/ -f1 | tr -d ' ')
  hot_ratio=$(cell "$f" "$hot" 4 | cut -d/ -f1 | tr -d ' ')
  p99_spread=$(cell "$f" "$spread" 5 | awk -F/ '{ gsub(/ /, "", $2); print $2 }')
  p99_hot=$(cell "$f" "$hot" 5 | awk -F/ '{ gsub(/ /, "", $3); print $3 }')
  echo "| $clients | $(cell "$f" "$spread" 2) | $(cell "$f" "$spread" 3) | **$(cell "$f" "$spread" 4)** | $b2 | $(cell "$f" "$hot" 3) | **$hot_ratio** | $p99_spread / $p99_hot |"
done
for clients in "${counts[@]}"; do
  echo
  echo "#### $clients clients"
  echo
  cat "$out/$clients.md"
done
