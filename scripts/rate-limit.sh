#!/usr/bin/env bash
# SPEC.md's 429, through the live API of the release binary: `tally serve`
# with TALLY_RATE_LIMIT=20 (20 requests a second per key, bursts of 20), then
# 200 quick reads of one wallet on one key. Each answer must be 200 or a 429
# `rate_limited` problem with a Retry-After of whole seconds; some must be
# 429; and another key must still be served. Exits non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

port=${PORT:-18280}
url="http://127.0.0.1:$port"
admin="tly_rate_limit_admin"

cargo build --release -p tally >/dev/null
bin=target/release/tally
in_workdir
export TALLY_ADMIN_KEY=$admin TALLY_RATE_LIMIT=20
start_serve "$work/serve.log" serve --listen "127.0.0.1:$port" \
  --store memory --data-dir "$work/data"

new_user() {
  curl -sf -X POST "$url/v1/users" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$1\"}" | sed 's/.*"api_key":"\([^"]*\)".*/\1/'
}
busy=$(new_user busy)
quiet=$(new_user quiet)

ok=0 limited=0
for i in $(seq 1 200); do
  status=$(curl -s -D "$work/headers" -o "$work/body" -w '%{http_code}' "$url/v1/wallet" -H "Authorization: Bearer $busy")
  case $status in
    200) ok=$((ok + 1)) ;;
    429)
      limited=$((limited + 1))
      grep -q '"code":"rate_limited"' "$work/body" || { echo "read $i: 429 without the rate_limited problem"; exit 1; }
      grep -qiE '^retry-after: [1-9][0-9]*' "$work/headers" || { echo "read $i: 429 without Retry-After"; exit 1; }
      ;;
    *) echo "read $i: unexpected status $status: $(cat "$work/body")"; exit 1 ;;
  esac
done
echo "200 quick reads on one key at TALLY_RATE_LIMIT=20: $ok answered 200, $limited answered 429 with Retry-After"
[ "$limited" -gt 0 ] || { echo "no read was limited"; exit 1; }
[ "$ok" -ge 20 ] || { echo "fewer than the burst of 20 were served"; exit 1; }
quiet_status=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/wallet" -H "Authorization: Bearer $quiet")
[ "$quiet_status" = 200 ] || { echo "another key was refused too: $quiet_status"; exit 1; }
echo "another key is still served: rate limits are per key"
