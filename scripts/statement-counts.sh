#!/usr/bin/env bash
# Counts what one request costs the database: statements, round trips and
# commits per request, per endpoint and strategy, read from PostgreSQL's
# pg_stat_statements (issue 12, "count before you change").
#
#   bash scripts/statement-counts.sh [requests per endpoint]      (default 200)
#   TALLY_BIN=/path/to/tally bash scripts/statement-counts.sh     (another build, e.g. an older one)
#   STRATEGIES=atomic bash scripts/statement-counts.sh
#   LOAD_CLIENTS=16 LOAD_DURATION=10s bash scripts/statement-counts.sh   (also: per movement under load)
#
# One private cluster per strategy (tally serve --data-dir), restarted once
# with pg_stat_statements preloaded. Requests are sent one at a time, so
# every figure is one request's own cost. The background tasks (sweeper,
# completer, reaper) also run statements: their rate is measured while idle
# and subtracted, pro rata to each endpoint's wall time.
#
# With LOAD_CLIENTS set, each strategy also gets rows measured under load:
# `tally load --workload spread|hot --one-step` with that many clients, whose
# statements are divided by the movements it made. These are the figures
# group commit changes (one request at a time, every batch is of one).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

requests=${1:-200}
strategies=${STRATEGIES:-pessimistic optimistic atomic}
if [ -z "${TALLY_BIN:-}" ]; then
  cargo build --release -p tally >/dev/null
  bin=target/release/tally
else
  bin=$TALLY_BIN
fi
work=$(mktemp -d)
chmod 755 "$work"
server=
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

start_server() { # strategy port
  start_serve "$work/$1.log" serve --strategy "$1" --listen "127.0.0.1:$2" --data-dir "$work/$1"
}

stop_server() {
  kill -TERM "$server"
  wait "$server" || true
  : >"$work/$1.log"
}

sql() { psql -qAt "$database" -c "$1"; }

# Statement calls so far, as "statements commits round-trips": a round trip
# is every call (BEGIN and COMMIT are calls of their own with sqlx); a
# statement is a call that is not transaction control.
counters() {
  sql "SELECT coalesce(sum(calls) FILTER (WHERE query !~* '^(begin|commit|rollback)'), 0),
              coalesce(sum(calls) FILTER (WHERE query ~* '^commit'), 0),
              coalesce(sum(calls), 0)
       FROM pg_stat_statements WHERE query !~* 'pg_stat_statements'" | tr '|' ' '
}

now_ms() { date +%s%3N; }

post() { # path body api-key [idempotency-key]
  curl -s -X POST "$url$1" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    ${4:+-H "Idempotency-Key: $4"} -d "$2"
}

echo "| strategy | endpoint | statements/req | commits/req | round trips/req |"
echo "|---|---|---|---|---|"
port=18700
for strategy in $strategies; do
  port=$((port + 1))
  url="http://127.0.0.1:$port"
  export TALLY_ADMIN_KEY="tly_counts_admin_$strategy"
  # First start creates the cluster; the second loads pg_stat_statements.
  start_server "$strategy" "$port"
  stop_server "$strategy"
  conf=$(find "$work/$strategy" -name postgresql.conf | head -1)
  printf "\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track_utility = on\n" >>"$conf"
  start_server "$strategy" "$port"
  database=$(sed -n 's/^database: //p' "$work/$strategy.log")
  sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null

  user_key=$(post /v1/users '{"name":"counter"}' "$TALLY_ADMIN_KEY" | sed 's/.*"api_key":"\([^"]*\)".*/\1/')
  post /v1/wallet/top-ups '{"amount":100000000}' "$user_key" "seed" >/dev/null
  product=$(post /v1/products "{\"name\":\"p\",\"price\":100,\"stock\":1000000}" "$TALLY_ADMIN_KEY" \
    | sed 's/.*"id":"\([^"]*\)".*/\1/')

  # The background's own rate, while idle.
  sql "SELECT pg_stat_statements_reset()" >/dev/null
  idle_started=$(now_ms)
  sleep 5
  read -r bg_statements bg_commits bg_trips < <(counters)
  idle_ms=$(( $(now_ms) - idle_started ))

  # measure NAME COMMAND...: runs COMMAND once per request (with $i set),
  # then prints the row, net of the background.
  measure() {
    local name=$1
    shift
    sql "SELECT pg_stat_statements_reset()" >/dev/null
    local started
    started=$(now_ms)
    for i in $(seq 1 "$requests"); do
      "$@" "$i" >/dev/null
    done
    local elapsed=$(( $(now_ms) - started ))
    read -r statements commits trips < <(counters)
    awk -v n="$requests" -v s="$statements" -v c="$commits" -v t="$trips" \
      -v bs="$bg_statements" -v bc="$bg_commits" -v bt="$bg_trips" -v e="$elapsed" -v i="$idle_ms" \
      -v strategy="$strategy" -v name="$name" \
      'BEGIN { f = e / i; printf "| %s | %s | %.1f | %.2f | %.1f |\n", strategy, name,
               (s - bs * f) / n, (c - bc * f) / n, (t - bt * f) / n }'
  }

  top_up() { post /v1/wallet/top-ups '{"amount":1}' "$user_key" "top-up-$1"; }
  replay() { post /v1/wallet/top-ups '{"amount":1}' "$user_key" "top-up-1"; }
  create() { post /v1/payments '{"amount":10,"method":"wallet"}' "$user_key" "create-$1" \
    | sed 's/.*"id":"\([^"]*\)".*/\1/' >>"$work/payments"; echo >>"$work/payments"; }
  confirm() { post "/v1/payments/$(sed -n "${1}p" "$work/payments")/confirm" '{}' "$user_key" "confirm-$1"; }
  cancel() { post "/v1/payments/$(sed -n "${1}p" "$work/payments")/cancel" '{}' "$user_key" "cancel-$1"; }
  one_step() { post /v1/payments '{"amount":10,"method":"wallet","confirm":true}' "$user_key" "one-step-$1"; }
  order() { post /v1/orders "{\"items\":[{\"product_id\":\"$product\",\"quantity\":1}]}" "$user_key" "order-$1" \
    | sed 's/.*"id":"\([^"]*\)".*/\1/' >>"$work/orders"; echo >>"$work/orders"; }
  pay_order() { post /v1/payments "{\"order_id\":\"$(sed -n "${1}p" "$work/orders")\",\"method\":\"wallet\",\"confirm\":true}" \
    "$user_key" "pay-order-$1"; }
  : >"$work/payments"
  : >"$work/orders"

  measure "POST /v1/wallet/top-ups" top_up
  measure "the same, replayed" replay
  measure "POST /v1/payments" create
  measure "POST /v1/payments/{id}/confirm" confirm
  measure "POST /v1/payments/{id}/cancel" cancel
  measure "POST /v1/orders" order
  if [ "$(one_step 0 | grep -c '"done"')" = 1 ]; then
    measure "POST /v1/payments, confirm: true" one_step
    measure "POST /v1/payments {order_id}, confirm: true" pay_order
  else
    echo "| $strategy | (this build has no one-step payments) | | | |"
  fi
  if [ -n "${LOAD_CLIENTS:-}" ]; then
    for workload in spread hot; do
      sql "SELECT pg_stat_statements_reset()" >/dev/null
      "$bin" load --url "$url" --workload "$workload" --one-step --clients "$LOAD_CLIENTS" \
        --duration "${LOAD_DURATION:-10s}" >"$work/load.out" 2>&1 || true
      read -r statements commits trips < <(counters)
      moved=$(sed -n 's/^movements  *\([0-9]*\) .*/\1/p' "$work/load.out")
      awk -v n="${moved:-0}" -v s="$statements" -v c="$commits" -v t="$trips" -v strategy="$strategy" \
        -v name="$workload one-step, $LOAD_CLIENTS clients (per movement)" \
        'BEGIN { if (n > 0) printf "| %s | %s | %.2f | %.3f | %.2f |\n", strategy, name, s / n, c / n, t / n;
                 else printf "| %s | %s | (no movements) | | |\n", strategy, name }'
    done
  fi
  stop_server "$strategy"
done
