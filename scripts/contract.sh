#!/usr/bin/env bash
# The API contract, checked the way a client generator would read it:
# schemathesis (pinned below, installed into a private virtualenv) against
# `tally serve`'s /openapi.json, all checks, every phase (examples, coverage,
# fuzzing, and the stateful phase that follows the operations' links), once
# with a user's key and once with the admin key. Exits non-zero on any
# failure schemathesis reports.
#
#   bash scripts/contract.sh                  # release build, PostgreSQL
#   STORE=memory MAX_EXAMPLES=20 bash scripts/contract.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve.sh

schemathesis_version=4.32.5
store=${STORE:-postgres}
port=${PORT:-18180}
gateway_port=${GATEWAY_PORT:-19190}
max_examples=${MAX_EXAMPLES:-30}
url="http://127.0.0.1:$port"
venv=${SCHEMATHESIS_VENV:-target/schemathesis-$schemathesis_version}
admin="tly_contract_admin"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$schemathesis_version"
fi
cargo build --release -p tally >/dev/null
bin=target/release/tally
in_workdir
start_gateway "$gateway_port"
TALLY_ADMIN_KEY=$admin start_serve "$work/serve.log" serve --listen "127.0.0.1:$port" --store "$store" \
  --data-dir "$work/data" --gateway-url "http://127.0.0.1:$gateway_port"

user=$(curl -sf -X POST "$url/v1/users" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"contract"}' | sed 's/.*"api_key":"\([^"]*\)".*/\1/')
curl -sf -X POST "$url/v1/wallet/top-ups" -H "Authorization: Bearer $user" -H 'Idempotency-Key: contract-fund' \
  -H 'Content-Type: application/json' -d '{"amount":1000000}' >/dev/null

# The hooks need the key's documented pattern (see scripts/contract/hooks.py).
export IDEMPOTENCY_KEY_PATTERN
IDEMPOTENCY_KEY_PATTERN=$(curl -sf "$url/openapi.json" | python3 -c '
import json, sys
operation = json.load(sys.stdin)["paths"]["/v1/wallet/top-ups"]["post"]
print(next(p["schema"]["pattern"] for p in operation["parameters"] if p["name"] == "Idempotency-Key"))')
export PYTHONPATH=scripts/contract SCHEMATHESIS_HOOKS=hooks

# Three runs: every route with the key its scheme names, then the user's key
# on every route, then the admin key on every route (a wrong key must get
# its documented 403, never anything else).
failed=0
for run in "own:$user:$admin" "user:$user:$user" "admin:$admin:$admin"; do
  IFS=: read -r name user_key admin_key <<<"$run"
  echo "== schemathesis $schemathesis_version, all checks, every phase: keys '$name'"
  if ! CONTRACT_USER_KEY=$user_key CONTRACT_ADMIN_KEY=$admin_key \
      "$venv/bin/st" --config-file scripts/contract/schemathesis.toml run "$url/openapi.json" \
      --checks all --max-examples "$max_examples" --seed 1 --no-color --workers 2 --request-timeout 10 \
      --report-junit-path "$work/$name.xml"; then
    failed=1
  fi
done
# Whatever the fuzzer sent, the books must still balance.
if [ "$store" = postgres ]; then
  echo "== tally check on the database the fuzzer wrote to"
  "$bin" check --database-url "$(sed -n 's/^database: //p' "$work/serve.log")" || failed=1
fi
exit $failed
