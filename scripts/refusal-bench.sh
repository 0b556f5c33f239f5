#!/usr/bin/env bash
# Two builds of `tally` side by side on refusal-heavy workloads, under the
# strategies that load without locks (where a refusal's reads are checked
# before it is answered, since session 12): last-unit (nearly every request
# refused out_of_stock) and hot (one wallet, overdrafts refused). Each run is
# 16 clients for 10 s on a private cluster of its own; the builds alternate,
# two rounds each, so the machine's noise falls on both. Prints one line per
# run: the load tool's last lines (request count, the checker's verdict).
#
#   OLD_BIN=/tmp/tally-old NEW_BIN=target/release/tally bash scripts/refusal-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh
: "${OLD_BIN:?the build to compare against}" "${NEW_BIN:=target/release/tally}"
export TALLY_ADMIN_KEY=tly_bench_admin
for strategy in optimistic atomic; do
  for workload in last-unit hot; do
    for round in 1 2; do
      for which in old new; do
        if [ "$which" = old ]; then bin=$OLD_BIN; else bin=$NEW_BIN; fi
        in_workdir
        start_serve "$work/serve.log" serve --listen 127.0.0.1:18777 --data-dir "$work/cluster" --strategy "$strategy"
        database=$(sed -n 's/^database: //p' "$work/serve.log")
        report=$("$bin" load --url http://127.0.0.1:18777 --workload "$workload" --clients 16 --duration 10s \
          --database-url "$database" 2>&1)
        echo "$strategy $workload round $round $which: $(echo "$report" | grep -E '^(requests|movements|verdict)' | tr -s ' ' | tr '\n' ' ')"
        stop_all
        trap - EXIT
      done
    done
  done
done
