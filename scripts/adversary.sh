#!/usr/bin/env bash
# Issue 10's reproductions, run through the live API the way an adversarial
# customer would: starts `tally gateway-sim` and `tally serve` (its own private
# PostgreSQL cluster in a temporary directory, or `STORE=memory`), then tries
# each money hole and checks that the service answers what SPEC.md says.
# Exits non-zero on the first answer that differs.
#
#   bash scripts/adversary.sh                # release build, PostgreSQL
#   STORE=memory STRATEGY=atomic bash scripts/adversary.sh
#
# Hole 9 (session 10): a charge whose answer was unclear, settled by the
# completer, must be answered as a charge when retried under its key.
# Hole 11 (session 12): a charge the gateway carries out after the service
# gave its confirm up must be refunded (the give-up is 3 s here).
# Hole 13 (session 13): an order's cancel sharing a group commit with
# another payment's confirm must be answered as alone, never 404.
# Session 14: a wallet at its ceiling must get its refund.
# Holes 5 (a charge of the wrong amount) and 6 (a request stamped before the
# wallet's window) need a tampering gateway or a skewed clock; the use-case,
# shuttle, end-to-end and simulation suites cover them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

store=${STORE:-postgres}
strategy=${STRATEGY:-pessimistic}
port=${PORT:-18080}
gateway_port=${GATEWAY_PORT:-19090}
url="http://127.0.0.1:$port"
gateway="http://127.0.0.1:$gateway_port"
admin="tly_adversary_admin"

cargo build --release -p tally >/dev/null
bin=target/release/tally
in_workdir
start_gateway "$gateway_port"
TALLY_ADMIN_KEY=$admin start_serve "$work/server.log" serve --listen "127.0.0.1:$port" --store "$store" \
  --strategy "$strategy" --data-dir "$work/data" --gateway-url "$gateway" --payback-bps 5000 \
  --completer-after-seconds 1 --gateway-give-up-seconds 3

# json FIELD: reads a JSON body on stdin, prints one field (dotted path).
json() { python3 -c 'import json,sys
v=json.load(sys.stdin)
for part in sys.argv[1].split("."): v=v[int(part)] if isinstance(v,list) else v[part]
print(v)' "$1"; }

n=0
# call METHOD PATH KEY BODY [IDEMPOTENCY-KEY]: prints "STATUS BODY".
call() {
  local method=$1 path=$2 key=$3 body=${4:-} idem=${5:-}
  n=$((n + 1))
  local args=(-s -o "$work/body" -w '%{http_code}' -X "$method" "$url$path" -H "Authorization: Bearer $key")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  if [ "$method" = POST ] && [ -n "$idem" ]; then args+=(-H "Idempotency-Key: $idem"); fi
  local status
  status=$(curl "${args[@]}")
  echo "$status $(cat "$work/body")"
}
expect() { # expect WHAT STATUS [CODE] -- "STATUS BODY"
  local what=$1 status=$2 code=$3 got=$4
  local got_status=${got%% *} body=${got#* }
  if [ "$got_status" != "$status" ] || { [ -n "$code" ] && [[ $body != *"\"code\":\"$code\""* ]]; }; then
    echo "FAIL $what: expected $status ${code:-}, got $got"
    exit 1
  fi
  echo "ok   $what -> $status ${code:-}"
}
user() { call POST /v1/users "$admin" "{\"name\":\"$1\"${2:+,\"limits\":$2}}" | cut -d' ' -f2- | json api_key; }
pay() { # pay USER-KEY METHOD AMOUNT -> payment id
  call POST /v1/payments "$1" "{\"amount\":$3,\"method\":\"$2\"}" "p-$RANDOM-$n" | cut -d' ' -f2- | json id
}
confirm() { call POST "/v1/payments/$2/confirm" "$1" "${3:-{\}}" "c-$RANDOM-$n"; }
confirm_keyed() { call POST "/v1/payments/$2/confirm" "$1" "$3" "$4"; } # USER PAYMENT BODY IDEMPOTENCY-KEY
balance() { call GET /v1/wallet "$1" | cut -d' ' -f2- | json balance; }
top_up() { expect "top up $2" 201 "" "$(call POST /v1/wallet/top-ups "$1" "{\"amount\":$2}" "t-$RANDOM-$n")"; }

echo "== 1. a gateway payment key belongs to one payment"
a=$(user alice) b=$(user bob)
p1=$(pay "$a" gateway 1000)
expect "P1 confirmed with K" 200 "" "$(confirm "$a" "$p1" '{"payment_key":"K-1"}')"
p2=$(pay "$a" gateway 1000)
expect "P2 (same user) confirmed with K" 409 payment_key_in_use "$(confirm "$a" "$p2" '{"payment_key":"K-1"}')"
p3=$(pay "$b" gateway 1001)
expect "P3 (another user, 1001) confirmed with K" 409 payment_key_in_use "$(confirm "$b" "$p3" '{"payment_key":"K-1"}')"
lookup=$(curl -s -u test_sk: "$gateway/v1/payments/K-1" | json status)
[ "$lookup" = DONE ] || { echo "FAIL P1's charge at the gateway is $lookup"; exit 1; }
echo "ok   P1's charge is still DONE at the gateway; P2 and P3 wait"

echo "== 2. no refusal after the card was refunded"
c=$(user carol)
top_up "$c" 100
p=$(pay "$c" gateway 1000)
expect "gateway payment 1000 (payback 500)" 200 "" "$(confirm "$c" "$p" '{"payment_key":"K-2"}')"
[ "$(balance "$c")" = 600 ] || { echo "FAIL balance $(balance "$c") != 600"; exit 1; }
spend=$(pay "$c" wallet 600)
expect "spend the 600" 200 "" "$(confirm "$c" "$spend")"
# 600 paid, 300 back: the 500 payback is not there to reverse.
expect "cancel after spending the cashback" 409 insufficient_balance \
  "$(call POST "/v1/payments/$p/cancel" "$c" "" "x-$RANDOM")"
status=$(curl -s -u test_sk: "$gateway/v1/payments/K-2" | json status)
[ "$status" = DONE ] || { echo "FAIL the card was refunded ($status) for a refused cancel"; exit 1; }
echo "ok   the card was not refunded"
top_up "$c" 200
expect "cancel once the payback can be reversed" 200 "" "$(call POST "/v1/payments/$p/cancel" "$c" "" "y-$RANDOM")"
[ "$(balance "$c")" = 0 ] || { echo "FAIL balance $(balance "$c") != 0"; exit 1; }
status=$(curl -s -u test_sk: "$gateway/v1/payments/K-2" | json status)
[ "$status" = CANCELED ] || { echo "FAIL the gateway says $status"; exit 1; }
echo "ok   cancelled, refunded at the gateway, books exact"
capped=$(user dave '{"max_balance":1200}')
top_up "$capped" 1000
p=$(pay "$capped" gateway 1000)
expect "a payback the maximum cannot take" 409 max_balance_exceeded \
  "$(confirm "$capped" "$p" '{"payment_key":"K-3"}')"
code=$(curl -s -o /dev/null -w '%{http_code}' -u test_sk: "$gateway/v1/payments/K-3")
[ "$code" = 404 ] || { echo "FAIL the gateway knows K-3 ($code): it was charged"; exit 1; }
echo "ok   refused before anything was sent to the gateway"

echo "== 3. the customer cannot choose its cashback"
expect "payback_amount in the body" 400 malformed_request \
  "$(call POST /v1/payments "$a" '{"amount":1000,"method":"wallet","payback_amount":1000}' "z-$RANDOM")"

echo "== 7. one queue token cannot hoard a showtime"
event=$(call POST /v1/events "$admin" '{"name":"gig","active_limit":5,"token_ttl_seconds":600,"max_seats_per_token":2,"showtimes":[{"starts_at":"2030-01-01T20:00:00Z","seats":[{"label":"A1","price":10},{"label":"A2","price":10},{"label":"A3","price":10}]}]}' | cut -d' ' -f2-)
event_id=$(echo "$event" | json id)
seat() { echo "$event" | json "showtimes.0.seats.$1.id"; }
token=$(call POST "/v1/events/$event_id/queue" "$a" | cut -d' ' -f2- | json token)
order() { curl -s -o "$work/body" -w '%{http_code}' -X POST "$url/v1/orders" -H "Authorization: Bearer $a" \
  -H 'Content-Type: application/json' -H "Queue-Token: $token" -H "Idempotency-Key: o-$RANDOM-$1" \
  -d "{\"seats\":[\"$1\"]}"; echo " $(cat "$work/body")"; }
expect "seat 1" 201 "" "$(order "$(seat 0)")"
expect "seat 2" 201 "" "$(order "$(seat 1)")"
expect "seat 3 with the same token" 409 seat_limit_reached "$(order "$(seat 2)")"

echo "== 8. the balance cap without a maximum"
e=$(user erin)
for i in $(seq 1 1000); do
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/v1/wallet/top-ups" -H "Authorization: Bearer $e" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: cap-$i" -d '{"amount":1000000000000}')
  [ "$status" = 201 ] || { echo "FAIL top-up $i answered $status"; exit 1; }
done
expect "one minor unit past 10^15" 409 max_balance_exceeded "$(call POST /v1/wallet/top-ups "$e" '{"amount":1}' cap-over)"

echo "== 9. a charge is never answered as a refusal on retry"
# The gateway charges but answers 500, and its lookups fail: the confirm's
# outcome is unknown (503). The completer then finds the charge; the retry
# under the confirm's key must answer it, not refuse it as a second confirm.
g=$(user grace)
p=$(pay "$g" gateway 1000)
curl -sf -u test_sk: -X POST "$gateway/__faults" -H 'Content-Type: application/json' \
  -d '{"fail_5xx_after_commit":{"when":"always","on":["confirm"],"status":500},"fail_5xx":{"when":"always","on":["lookup"],"status":500}}' >/dev/null
expect "a confirm whose charge is unclear" 503 unavailable "$(confirm_keyed "$g" "$p" '{"payment_key":"K-9"}' retry-9)"
curl -sf -u test_sk: -X DELETE "$gateway/__faults" >/dev/null
settled() { call GET "/v1/payments/$p" "$g" | cut -d' ' -f2- | json status; }
for _ in $(seq 1 30); do [ "$(settled)" = done ] && break; sleep 1; done
[ "$(settled)" = done ] || { echo "FAIL the completer did not settle the charge: $(settled)"; exit 1; }
expect "the retry under its key answers the charge" 200 "" "$(confirm_keyed "$g" "$p" '{"payment_key":"K-9"}' retry-9)"
expect "another key's confirm is a second confirm" 409 invalid_state \
  "$(confirm_keyed "$g" "$p" '{"payment_key":"K-9"}' other-9)"
[ "$(curl -s -u test_sk: "$gateway/v1/payments/K-9" | json status)" = DONE ] || { echo "FAIL the gateway lost K-9"; exit 1; }
echo "ok   charged once, and told so"

echo "== 11. a charge the gateway carries out after the give-up is refunded"
# The gateway holds the confirm 15 s. Meanwhile the completer (every 5 s)
# looks it up, the gateway does not know it, and past the 3 s give-up the
# payment is failed, watched. When the charge lands, it is refunded, and
# the confirm is answered failed.
h=$(user heidi)
p=$(pay "$h" gateway 1000)
curl -sf -u test_sk: -X POST "$gateway/__faults" -H 'Content-Type: application/json' \
  -d '{"latency":{"min_ms":15000,"max_ms":15000,"when":"always","on":["confirm"]}}' >/dev/null
answer=$(confirm_keyed "$h" "$p" '{"payment_key":"K-11"}' late-11)
curl -sf -u test_sk: -X DELETE "$gateway/__faults" >/dev/null
expect "the late charge's confirm" 200 "" "$answer"
[ "$(echo "${answer#* }" | json status)" = failed ] || { echo "FAIL the confirm answered $answer"; exit 1; }
[ "$(curl -s -u test_sk: "$gateway/v1/payments/K-11" | json status)" = CANCELED ] ||
  { echo "FAIL the late charge K-11 was not refunded"; exit 1; }
expect "the retry under its key" 200 "" "$(confirm_keyed "$h" "$p" '{"payment_key":"K-11"}' late-11)"
[ "$(balance "$h")" = 0 ] || { echo "FAIL heidi's wallet is $(balance "$h")"; exit 1; }
echo "ok   given up, charged late, refunded to the card, answered failed"

echo "== 13. an order's cancel batched with another payment's confirm is answered as alone"
# Group commit is on (the default). The customer cancels an order while
# another tab confirms one of its other payments; the two often share a
# batch. The cancel must be 200 cancelled, never 404 for its own order
# (session 13: the batch's other payment was taken for the order's).
h=$(user henry)
top_up "$h" 100000
product=$(call POST /v1/products "$admin" '{"name":"widget","price":100,"stock":1000}' | cut -d' ' -f2- | json id)
# post_at PATH IDEMPOTENCY-KEY OUT: a POST of its own body file, so that two
# can run at once.
post_at() {
  curl -s -o "$3.body" -w '%{http_code}' -X POST "$url$1" -H "Authorization: Bearer $h" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $2" -d '{}' > "$3"
}
for round in $(seq 1 20); do
  o=$(call POST /v1/orders "$h" "{\"items\":[{\"product_id\":\"$product\",\"quantity\":1}]}" "o13-$round" |
    cut -d' ' -f2- | json id)
  p=$(pay "$h" wallet 10)
  post_at "/v1/orders/$o/cancel" "x13-$round" "$work/cancel" &
  cancel=$!
  post_at "/v1/payments/$p/confirm" "y13-$round" "$work/confirm" &
  # Not a bare `wait`: the gateway and the server are children too.
  wait "$cancel" $!
  for what in cancel confirm; do
    [ "$(cat "$work/$what")" = 200 ] ||
      { echo "FAIL round $round: the $what answered $(cat "$work/$what") $(cat "$work/$what.body")"; exit 1; }
  done
done
echo "ok   20 rounds: every cancel 200, every confirm 200"

echo "== 14. a wallet at its ceiling gets its refund"
# Payback is 50 % here: 1000 in, 200 paid, 100 back = 900; the cancel's
# reversal comes first (800), then the refund (1000, the ceiling itself).
i=$(user ivy '{"max_balance":1000}')
top_up "$i" 1000
p=$(pay "$i" wallet 200)
expect "pay 200 at the ceiling" 200 "" "$(confirm "$i" "$p")"
expect "cancel back to the ceiling" 200 "" "$(call POST "/v1/payments/$p/cancel" "$i" "" "c14-$RANDOM")"
[ "$(balance "$i")" = 1000 ] || { echo "FAIL balance $(balance "$i") != 1000"; exit 1; }
echo "ok   refunded to the ceiling, never past it"

echo "all reproductions behave as SPEC.md says ($store, $strategy)"
