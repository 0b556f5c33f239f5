#!/usr/bin/env bash
# Measures `tally load` for every strategy, batch setting and workload: one
# `tally serve` per strategy and `--batch-max` on its own private PostgreSQL
# cluster (fsync on, the default), then each workload against it, then the
# invariant checker on the database. Prints a Markdown table; compare rows of
# the same strategy and workload (same run, same machine).
#
#   bash scripts/load-table.sh [clients] [duration]     (defaults: 16 10s)
#   WORKLOADS=inventory bash scripts/load-table.sh 32 10s   (one workload; unpaid orders expire after 5 s)
#   BATCHES="1 64" WORKLOADS="hot spread" bash scripts/load-table.sh   (group commit off against on)
#   LOAD_ARGS=--one-step bash scripts/load-table.sh      (pay in one request)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

clients=${1:-16}
duration=${2:-10s}
workloads=${WORKLOADS:-hot spread duplicates}
strategies=${STRATEGIES:-pessimistic optimistic atomic}
# Empty: serve's default.
batches=${BATCHES:-default}
read -r -a load_args <<<"${LOAD_ARGS:-}"
cargo build --release -p tally >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release/tally
work=$(mktemp -d)
# Under root the cluster runs as the `postgres` user, who must reach its data dir.
chmod 755 "$work"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

echo "| strategy | --batch-max | workload | clients | req/s | movements/s | p50 ms | p99 ms | max ms | statuses | verdict |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
port=18600
for strategy in $strategies; do
  for batch in $batches; do
    port=$((port + 1))
    name="$strategy-$batch"
    export TALLY_ADMIN_KEY="tly_load_admin_$strategy"
    batch_args=()
    [ "$batch" != default ] && batch_args=(--batch-max "$batch")
    start_serve "$work/$name.log" serve --strategy "$strategy" "${batch_args[@]}" --listen "127.0.0.1:$port" \
      --data-dir "$work/$name" --order-ttl-seconds "${ORDER_TTL_SECONDS:-5}"
    database=$(sed -n 's/^database: //p' "$work/$name.log")
    for workload in $workloads; do
      out=$("$bin" load --url "http://127.0.0.1:$port" --workload "$workload" --clients "$clients" \
        --duration "$duration" --database-url "$database" "${load_args[@]}" 2>&1) || true
      rps=$(sed -n 's/^requests .*(\([0-9]*\) req\/s)/\1/p' <<<"$out")
      mps=$(sed -n 's/^movements .*(\([0-9]*\) movements\/s)/\1/p' <<<"$out")
      read -r p50 p99 max < <(sed -n 's/^latency *p50 \([0-9.]*\) ms *p99 \([0-9.]*\) ms *max \([0-9.]*\) ms/\1 \2 \3/p' <<<"$out") || true
      statuses=$(sed -n 's/^statuses *//p' <<<"$out")
      verdict=$(sed -n 's/^verdict *//p' <<<"$out")
      echo "| $strategy | $batch | $workload | $clients | $rps | ${mps:-} | $p50 | $p99 | $max | $statuses | ${verdict:-ERROR} |"
      if [ "$verdict" != "PASS" ]; then
        echo "$out" >&2
      fi
    done
    kill -TERM "$server"
    wait "$server" || true
  done
done
