#!/usr/bin/env bash
# Measures `tally load` for every strategy and workload, the way README.md's
# table was made: one `tally serve` per strategy on its own private PostgreSQL
# cluster (fsync on, the default), then each workload against it, then the
# invariant checker on the database. Prints a Markdown table.
#
#   bash scripts/load-table.sh [clients] [duration]     (defaults: 16 10s)
#   WORKLOADS=inventory bash scripts/load-table.sh 32 10s   (one workload; unpaid orders expire after 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

clients=${1:-16}
duration=${2:-10s}
workloads=${WORKLOADS:-hot spread duplicates}
cargo build --release -p tally >/dev/null
bin=target/release/tally
work=$(mktemp -d)
# Under root the cluster runs as the `postgres` user, who must reach its data dir.
chmod 755 "$work"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

echo "| strategy | workload | clients | req/s | p50 ms | p99 ms | max ms | statuses | verdict |"
echo "|---|---|---|---|---|---|---|---|---|"
port=18600
for strategy in pessimistic optimistic atomic; do
  port=$((port + 1))
  export TALLY_ADMIN_KEY="tly_load_admin_$strategy"
  start_serve "$work/$strategy.log" serve --strategy "$strategy" --listen "127.0.0.1:$port" \
    --data-dir "$work/$strategy" --order-ttl-seconds "${ORDER_TTL_SECONDS:-5}"
  database=$(sed -n 's/^database: //p' "$work/$strategy.log")
  for workload in $workloads; do
    out=$("$bin" load --url "http://127.0.0.1:$port" --workload "$workload" --clients "$clients" \
      --duration "$duration" --database-url "$database" 2>&1) || true
    rps=$(sed -n 's/^requests .*(\([0-9]*\) req\/s)/\1/p' <<<"$out")
    read -r p50 p99 max < <(sed -n 's/^latency *p50 \([0-9.]*\) ms *p99 \([0-9.]*\) ms *max \([0-9.]*\) ms/\1 \2 \3/p' <<<"$out") || true
    statuses=$(sed -n 's/^statuses *//p' <<<"$out")
    verdict=$(sed -n 's/^verdict *//p' <<<"$out")
    echo "| $strategy | $workload | $clients | $rps | $p50 | $p99 | $max | $statuses | ${verdict:-ERROR} |"
    if [ "$verdict" != "PASS" ]; then
      echo "$out" >&2
    fi
  done
  kill -TERM "$server"
  wait "$server" || true
done
