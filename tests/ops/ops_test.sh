#!/usr/bin/env bash
# ops.lint: third-party linters on what a real ringfence-server serves.
#   - the OpenAPI document (GET /v1/openapi.json) through Redocly's linter (recommended rules)
#   - /metrics through `promtool check metrics` (Debian's prometheus package)
# It drives some traffic first so every metric family has samples (routes, rollouts, gates).
# Usage: ops_test.sh BIN_DIR    (prints "ops: N passed, M failed"; exits non-zero on failure)
set -uo pipefail
bin_dir="$1"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

passed=0
failed=0
check() {  # check NAME COMMAND...
  local name="$1"; shift
  if "$@" > "$work/out.txt" 2>&1; then
    echo "ok   $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; sed 's/^/     /' "$work/out.txt" | tail -40; failed=$((failed + 1))
  fi
}

token="ops-test-admin-token-0123456789"
RINGFENCE_ADMIN_TOKEN="$token" "$bin_dir/server/ringfence-server" --data-dir "$work/data" \
  --listen 127.0.0.1:0 --no-access-log > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/server.out" 2>/dev/null | grep -o '[0-9]*$')
  [ -n "$port" ] && break
  sleep 0.1
done
if [ -z "$port" ]; then echo "FAIL server did not start"; cat "$work/server.err"; echo "ops: 0 passed, 1 failed"; exit 1; fi
url="http://127.0.0.1:$port"
api() { curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }

# Traffic: a ring, a channel, a release and a running rollout, plus a refused request.
api -X POST "$url/v1/rings" -d '{"name":"canary","rank":0,"selector":{"buckets":[0,100]}}' >/dev/null
api -X POST "$url/v1/rings" -d '{"name":"rest","rank":1,"selector":{"buckets":[100,10000]}}' >/dev/null
api -X POST "$url/v1/channels" -d '{"name":"detections"}' >/dev/null
printf '{"rules":[]}' > "$work/c.json"
sha=$(sha256sum "$work/c.json" | cut -c1-64)
curl -sS -o /dev/null -H "Authorization: Bearer $token" --data-binary @"$work/c.json" "$url/v1/blobs"
api -X POST "$url/v1/channels/detections/releases" -d "{\"sha256\":\"$sha\",\"notes\":\"ops\"}" >/dev/null
api -X POST "$url/v1/rollouts" -d '{"channel":"detections","version":1,"stages":[{"ring":"canary","bake_s":60,"min_hosts":1}]}' >/dev/null
api -X POST "$url/v1/rollouts/1/start" >/dev/null
api "$url/v1/rings/NOPE" >/dev/null
for i in 1 2 3; do api "$url/scan/$i/wp-login.php" >/dev/null; api "$url/v1/hosts/$i" >/dev/null; done

curl -sS "$url/v1/openapi.json" > "$work/openapi.json"
curl -sS "$url/metrics" > "$work/metrics.txt"

check "openapi document is served" test -s "$work/openapi.json"
check "redocly lint (recommended rules)" "$here/node_modules/.bin/redocly" lint --format stylish "$work/openapi.json"
check "promtool check metrics" sh -c "promtool check metrics < '$work/metrics.txt'"
check "metrics carry request counts by route" grep -q '^ringfence_http_requests_total{route="/v1/rings"' "$work/metrics.txt"
check "metrics label routes by pattern" grep -q '^ringfence_http_requests_total{route="/v1/hosts/{id}",status="400"} 3' "$work/metrics.txt"
check "metrics put unknown paths under one label" grep -q '^ringfence_http_requests_total{route="unmatched",status="404"} 3' "$work/metrics.txt"
check "metrics carry the active gate statistic" grep -q '^ringfence_gate_statistic{rollout="1"' "$work/metrics.txt"
check "metrics carry rollouts by state" grep -q '^ringfence_rollouts{state="baking"} 1' "$work/metrics.txt"

echo "ops: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
