#!/usr/bin/env bash
# Issue 12's table, from one run on one private PostgreSQL cluster: the raw-SQL
# payment patterns of pg-limits.md (`tally load --raw`), then default
# `tally serve` driven by `tally load` (one-step and two-step payments), each
# with --database-url so the invariant checker runs. Prints the Markdown table
# (pattern | raw SQL tx/s | Tally movements/s | ratio) with p99s, then every
# run's line.
#
#   bash scripts/ratio-table.sh [clients] [duration]     (defaults: 16 15s)
#   TALLY_BATCH_MAX=64 bash scripts/ratio-table.sh       (passes --batch-max 64 to serve)
#
# The raw patterns run first, against the service's own (idle) database, in
# their own schema `raw_baseline`, which `tally load --raw` drops afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

clients=${1:-16}
duration=${2:-15s}
cargo build --release -p tally >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release/tally
work=$(mktemp -d)
# Under root the cluster runs as the `postgres` user, who must reach its data dir.
chmod 755 "$work"
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=18650
export TALLY_ADMIN_KEY=tly_ratio_admin
serve_args=(serve --listen "127.0.0.1:$port" --data-dir "$work/cluster")
# Group commit is being built on another branch: pass its knob only when asked,
# so the script runs on a serve that does not know the flag yet.
if [ -n "${TALLY_BATCH_MAX:-}" ]; then
  serve_args+=(--batch-max "$TALLY_BATCH_MAX")
fi
start_serve "$work/serve.log" "${serve_args[@]}"
database=$(sed -n 's/^database: //p' "$work/serve.log")

# CPU ticks (1/100 s) used so far by PostgreSQL (the postmaster, its live
# children and the children it reaped) and by the server, as "pg serve".
postmaster=$(head -1 "$(find "$work/cluster" -name postmaster.pid | head -1)")
ticks() { awk '{ t += $14 + $15 } END { print t }' "/proc/$1/stat"; }
cpu_ticks() {
  local pg
  pg=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$postmaster/stat" 2>/dev/null || echo 0)
  for child in $(ps -o pid= --ppid "$postmaster"); do
    pg=$((pg + $(ticks "$child" 2>/dev/null || echo 0)))
  done
  echo "$pg $(ticks "$server")"
}

# One run: its output kept in $work/<name>.out (and the CPU it cost in
# $work/<name>.cpu, "pg serve" ticks); fails the script's verdict column,
# not the script, when a check fails.
run() {
  local name=$1
  shift
  local before after
  # The invariant checker reads the database; the in-memory runs have none
  # (the load tool's own checks still run).
  local checker=(--database-url "$database")
  if [ "${1:-}" = --no-database ]; then
    checker=()
    shift
  fi
  before=$(cpu_ticks)
  "$bin" load "$@" --clients "$clients" --duration "$duration" "${checker[@]}" \
    >"$work/$name.out" 2>&1 || true
  after=$(cpu_ticks)
  echo "$before $after" | awk '{ print $3 - $1, $4 - $2 }' >"$work/$name.cpu"
  if [ "$(verdict "$name")" != "PASS" ]; then
    echo "--- $name did not pass:" >&2
    cat "$work/$name.out" >&2
  fi
}
movements() { sed -n 's/^movements .*(\([0-9]*\) movements\/s)/\1/p' "$work/$1.out"; }
p99() { sed -n 's/^latency .*p99 \([0-9.]*\) ms.*/\1/p' "$work/$1.out"; }
verdict() { sed -n 's/^verdict *//p' "$work/$1.out"; }
ratio() { awk -v t="$1" -v r="$2" 'BEGIN { if (r > 0) printf "%.2f×", t / r; else print "n/a" }'; }

run raw-c --raw c
run raw-b2 --raw b2
run raw-a --raw a
run spread-1 --url "http://127.0.0.1:$port" --workload spread --one-step
run hot-1 --url "http://127.0.0.1:$port" --workload hot --one-step
run spread-2 --url "http://127.0.0.1:$port" --workload spread
run hot-2 --url "http://127.0.0.1:$port" --workload hot
kill -TERM "$server"
wait "$server" || true
server=

# The ceiling: the same server and workloads on the in-memory store, so no
# database at all — what HTTP, JSON, idempotency and the use cases cost on
# this machine by themselves. No Tally run on PostgreSQL can beat it, so a
# raw pattern above it is a ratio no database design reaches here.
start_serve "$work/serve-memory.log" serve --listen "127.0.0.1:$((port + 1))" --store memory
memory_server=$server
run mem-spread-1 --no-database --url "http://127.0.0.1:$((port + 1))" --workload spread --one-step
run mem-hot-1 --no-database --url "http://127.0.0.1:$((port + 1))" --workload hot --one-step
kill -TERM "$memory_server"
wait "$memory_server" || true
server=

c=$(movements raw-c) b2=$(movements raw-b2) a=$(movements raw-a)
echo "$clients clients, $duration each, one private PostgreSQL cluster, default \`tally serve\`${TALLY_BATCH_MAX:+ --batch-max $TALLY_BATCH_MAX}."
echo
echo "| pattern | raw SQL (tx/s) | Tally (movements/s) | ratio | p99 ms raw / Tally |"
echo "|---|---|---|---|---|"
for flow in 1 2; do
  label=$([ $flow = 1 ] && echo "one-step" || echo "two-step")
  s=$(movements spread-$flow) h=$(movements hot-$flow)
  echo "| spread over many wallets, $label (raw: c) | $c | $s | **$(ratio "$s" "$c")** | $(p99 raw-c) / $(p99 spread-$flow) |"
  echo "| one hot wallet, $label (raw: b2 / a) | $b2 / $a | $h | **$(ratio "$h" "$b2") / $(ratio "$h" "$a")** | $(p99 raw-b2) / $(p99 raw-a) / $(p99 hot-$flow) |"
done
ms=$(movements mem-spread-1) mh=$(movements mem-hot-1)
echo "| ceiling: spread, one-step, **no database** (\`--store memory\`) (raw: c) | $c | $ms | **$(ratio "$ms" "$c")** | $(p99 raw-c) / $(p99 mem-spread-1) |"
echo "| ceiling: one hot wallet, one-step, **no database** (raw: b2 / a) | $b2 / $a | $mh | **$(ratio "$mh" "$b2") / $(ratio "$mh" "$a")** | $(p99 raw-b2) / $(p99 raw-a) / $(p99 mem-hot-1) |"
echo
echo "| run | movements/s | p50 ms | p99 ms | max ms | verdict | CPU ms per movement: PostgreSQL / server |"
echo "|---|---|---|---|---|---|---|"
for name in raw-c raw-b2 raw-a spread-1 hot-1 spread-2 hot-2 mem-spread-1 mem-hot-1; do
  read -r p50 p99 max < <(sed -n 's/^latency *p50 \([0-9.]*\) ms *p99 \([0-9.]*\) ms *max \([0-9.]*\) ms/\1 \2 \3/p' "$work/$name.out") || true
  moved=$(sed -n 's/^movements  *\([0-9]*\) .*/\1/p' "$work/$name.out")
  # Ticks are 10 ms; the run's setup and checks are counted too (small
  # against 15 s of load, and the same for every run).
  cpu=$(awk -v n="${moved:-0}" -v db="${name%%-*}" '{
    if (n > 0 && db == "mem") printf "— / %.3f", $2 * 10 / n
    else if (n > 0) printf "%.3f / %.3f", $1 * 10 / n, $2 * 10 / n
  }' "$work/$name.cpu")
  echo "| $name | $(movements $name) | $p50 | $p99 | $max | $(verdict $name) | $cpu |"
done
