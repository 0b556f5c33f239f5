#!/usr/bin/env bash
# Group commit, off against on, in one run: for each strategy, one
# `tally serve` per batch setting (its own private PostgreSQL cluster, fsync
# on), each driven by `tally load` with the same clients and duration, then
# the invariant checker on the database. Prints a Markdown table; compare
# rows of the same strategy and workload (same run, same machine).
#
#   bash scripts/group-commit-table.sh [clients] [duration]   (defaults: 16 10s)
#   BATCHES="1 64" STRATEGIES="pessimistic atomic" WORKLOADS="hot spread" bash scripts/group-commit-table.sh
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${1:-16}
duration=${2:-10s}
workloads=${WORKLOADS:-hot spread}
strategies=${STRATEGIES:-pessimistic optimistic atomic}
batches=${BATCHES:-1 64}
cargo build --release -p tally >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release/tally
work=$(mktemp -d)
# Under root the cluster runs as the `postgres` user, who must reach its data dir.
chmod 755 "$work"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

echo "| strategy | --batch-max | workload | clients | req/s | p50 ms | p99 ms | max ms | statuses | verdict |"
echo "|---|---|---|---|---|---|---|---|---|---|"
port=18700
for strategy in $strategies; do
  for batch in $batches; do
    port=$((port + 1))
    name="$strategy-$batch"
    export TALLY_ADMIN_KEY="tly_load_admin_$strategy"
    "$bin" serve --strategy "$strategy" --batch-max "$batch" --listen "127.0.0.1:$port" --data-dir "$work/$name" \
      >"$work/$name.log" 2>&1 &
    server=$!
    for _ in $(seq 1 120); do
      grep -q "tally listening" "$work/$name.log" && break
      sleep 0.5
    done
    if ! grep -q "tally listening" "$work/$name.log"; then
      echo "tally serve --strategy $strategy --batch-max $batch did not start:" >&2
      cat "$work/$name.log" >&2
      exit 1
    fi
    database=$(sed -n 's/^database: //p' "$work/$name.log")
    for workload in $workloads; do
      out=$("$bin" load --url "http://127.0.0.1:$port" --workload "$workload" --clients "$clients" \
        --duration "$duration" --database-url "$database" 2>&1) || true
      rps=$(sed -n 's/^requests .*(\([0-9]*\) req\/s)/\1/p' <<<"$out")
      read -r p50 p99 max < <(sed -n 's/^latency *p50 \([0-9.]*\) ms *p99 \([0-9.]*\) ms *max \([0-9.]*\) ms/\1 \2 \3/p' <<<"$out") || true
      statuses=$(sed -n 's/^statuses *//p' <<<"$out")
      verdict=$(sed -n 's/^verdict *//p' <<<"$out")
      echo "| $strategy | $batch | $workload | $clients | $rps | $p50 | $p99 | $max | $statuses | ${verdict:-ERROR} |"
      if [ "$verdict" != "PASS" ]; then
        echo "$out" >&2
      fi
    done
    kill -TERM "$server"
    wait "$server" || true
  done
done
