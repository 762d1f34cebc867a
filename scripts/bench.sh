#!/usr/bin/env bash
# The benchmark, in ONE run on loopback (server and load generator share the machine):
#   - nginx (nginx-light, one worker, keep-alive, no access log) serving a static file of the same
#     size as our desired-state answer: the reference, measured in the same run;
#   - GET /v1/agent/desired 304 (If-None-Match) and 200, POST /v1/agent/heartbeat, over HOSTS
#     enrolled hosts, with wrk at 64 and 256 connections, REPS x DUR s each, medians;
#   - server RSS and start-up time (to the "listening on" line) with 0, HOSTS and BIG enrolled
#     hosts (seeded with bench/seed_hosts: core::Service::enroll on the store, one row per host);
#   - rollback propagation: LP hosts hold long polls, the rollout is aborted through the API, and
#     bench/agent_load records when each poll is answered (50 / 99 / 100 %);
#   - the TLS path (BENCH_TLS=0 skips it): the same fleet served over TLS against nginx serving the
#     same bytes over TLS with the same certificate: 304 with keep-alive, full and resumed
#     handshakes per second (openssl s_time);
#   - the agent's footprint, idle in a long poll against this server: RSS and stripped size of a
#     MinSizeRel build (build-bench-agent, tests/agent/footprint.sh), full runs only
#     (BENCH_AGENT=0 skips it and prints the figures of agent/FOOTPRINT.md instead).
# The machine's load average is recorded at the start and the end: on a shared 2-core box the
# figures move with what else runs, so the nginx reference is measured in the same run,
# interleaved with our targets, and every figure is a median of the repetitions.
# Prints the tables and writes bench/out/bench.json (bench/out/quick.json with --quick).
#
#   scripts/bench.sh            full run: 100 000 / 1 000 000 hosts, 10 000 long polls, 3 x 10 s
#   scripts/bench.sh --quick    smoke: tiny counts, 1 s runs, this build's binaries (CTest bench_smoke)
# Env: RINGFENCE_BENCH_BUILD (build dir; default build-bench), BENCH_HOSTS / BENCH_BIG / BENCH_LP /
#      BENCH_DUR / BENCH_REPS / BENCH_CONNS override the counts; BENCH_PROFILE=1 samples the server
#      with `perf record -e cpu-clock` during the first repetition of each server target and writes
#      the top symbols to bench/out/profile-TARGET-CONNS.txt; BENCH_PROFILE=callgrind runs the
#      fleet server under valgrind's callgrind and writes the instruction counts of each target's
#      first repetition (zeroed before, dumped after) to bench/out/callgrind-TARGET-CONNS.txt
#      (use it with --quick and BENCH_LP=20: everything runs ~50x slower). BENCH_KEEP=1 keeps the
#      work dir (server logs, wrk output, the seeded stores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then
  hosts=${BENCH_HOSTS:-2000}; big=${BENCH_BIG:-5000}; lp=${BENCH_LP:-200}
  dur=${BENCH_DUR:-1}; reps=${BENCH_REPS:-1}; conns_list=${BENCH_CONNS:-"64"}
else
  hosts=${BENCH_HOSTS:-100000}; big=${BENCH_BIG:-1000000}; lp=${BENCH_LP:-10000}
  dur=${BENCH_DUR:-10}; reps=${BENCH_REPS:-3}; conns_list=${BENCH_CONNS:-"64 256"}
fi
build="${RINGFENCE_BENCH_BUILD:-$root/build-bench}"
out="$root/bench/out"; mkdir -p "$out"
json_out="$out/$([ $quick = 1 ] && echo quick || echo bench).json"
say() { echo "bench: $*" >&2; }
fail() { echo "bench: FAILED: $*" >&2; exit 1; }

# ---- tools and binaries
if [ $quick = 0 ]; then
  bash scripts/install-deps.sh bench
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRINGFENCE_WERROR=ON \
        -DCMAKE_CXX_FLAGS=-Wno-error=maybe-uninitialized >/dev/null
  cmake --build "$build" --target ringfence-server seed_hosts agent_load
fi
for t in wrk nginx curl python3; do command -v $t >/dev/null || fail "$t missing (scripts/install-deps.sh bench)"; done
server_bin="$build/server/ringfence-server"; seed_bin="$build/bench/seed_hosts"; load_bin="$build/bench/agent_load"
for b in "$server_bin" "$seed_bin" "$load_bin"; do [ -x "$b" ] || fail "$b not built"; done

# tmpfs when there is one: seeding a million hosts is a million SQLite commits.
tmp=/tmp; [ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
work=$(mktemp -d "$tmp/ringfence-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Per process: the server holds LP sockets, the probe LP more (each its own limit).
[ "$(ulimit -n)" -ge $((lp + 1000)) ] || fail "open-file limit $(ulimit -n) too low for $lp long polls"

token="bench-admin-token-0123456789abcdef"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
results="$work/results.tsv"; : > "$results"
put() { printf '%s\t%s\n' "$1" "$2" >> "$results"; }   # key value

# start_server NAME DATA_DIR -> sets spid, url, start_ms (launch to "listening on"), start_cpu_ms
# (the server's user + system CPU time by then: what start-up costs on a machine others share)
start_server() {
  local name=$1 dir=$2 t0 t1
  t0=$(date +%s%N)
  local wrap=()
  if [ "${BENCH_PROFILE:-0}" = callgrind ] && [ "$name" = fleet ]; then
    wrap=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" --dump-instr=no)
  fi
  RINGFENCE_ADMIN_TOKEN=$token "${wrap[@]}" "$server_bin" --data-dir "$dir" --listen 127.0.0.1:0 --threads 1 \
    --no-access-log --heartbeat-s 3600 --exposed-heartbeat-s 3600 --healthy-after-s 0 \
    --evidence-min-age-s 0 \
    > "$work/$name.out" 2> "$work/$name.err" &
  spid=$!; pids+=("$spid")
  for _ in $(seq 12000); do  # 120 s at most
    grep -q '^listening on' "$work/$name.out" 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || { cat "$work/$name.err" >&2; fail "server $name exited"; }
    sleep 0.01
  done
  grep -q '^listening on' "$work/$name.out" || fail "server $name did not start within 120 s"
  t1=$(date +%s%N)
  start_ms=$(( (t1 - t0) / 1000000 ))
  start_cpu_ms=$(awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$spid/stat")
  url="http://127.0.0.1:$(sed -n 's/^listening on 127.0.0.1://p' "$work/$name.out")"
}
stop_server() { kill "$spid"; wait "$spid" 2>/dev/null || true; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
api() { curl -sS --fail-with-body -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# ---- 1. memory and start-up: 0 hosts, then HOSTS (this server stays up for the load runs)
say "server with 0 hosts"
start_server empty "$work/empty"; sleep 1
rss0=$(rss_kib "$spid"); put start_ms_0 "$start_ms"; put start_cpu_ms_0 "$start_cpu_ms"; put rss_kib_0 "$rss0"; stop_server

say "seeding $hosts hosts (core::Service::enroll, one SQLite row each)"
"$seed_bin" --data-dir "$work/fleet" --hosts "$hosts" --creds "$work/creds.txt" > "$work/seed.json"
put seed_per_s_hosts "$(field enrolls_per_s < "$work/seed.json")"
start_server fleet "$work/fleet"; sleep 1
rss_h=$(rss_kib "$spid"); put start_ms_hosts "$start_ms"; put start_cpu_ms_hosts "$start_cpu_ms"; put rss_kib_hosts "$rss_h"
fleet_pid=$spid

# ---- 2. content: release 1 made stable by a bootstrap rollout, release 2 rolling to every host
api -X POST "$url/v1/rings" -d '{"name":"all","rank":0,"selector":{"buckets":[0,10000]}}' >/dev/null
api -X POST "$url/v1/channels" -d '{"name":"detections","schema":{}}' >/dev/null
release() {  # CONTENT -> version
  printf '%s' "$1" > "$work/blob"
  local sha
  sha=$(curl -sS --fail-with-body -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' \
        --data-binary @"$work/blob" "$url/v1/blobs" | field sha256)
  api -X POST "$url/v1/channels/detections/releases" -d "{\"sha256\":\"$sha\",\"notes\":\"bench\"}" | field version
}
v1=$(release '{"rules":["r1","r2","r3"],"serial":1}')
# (pacing off: one wave. A stage passes once every live host it covers has been offered the
# release, and the seeded hosts count as live: each polls once, below.)
r1=$(api -X POST "$url/v1/rollouts" -d "{\"channel\":\"detections\",\"version\":$v1,\"stages\":[{\"ring\":\"all\",\"percent\":100,\"bake_s\":0,\"min_hosts\":1,\"pacing\":{\"initial\":100000000}}]}" | field id)
api -X POST "$url/v1/rollouts/$r1/start" -d '{}' >/dev/null
"$load_bin" prime --port "${url##*:}" --creds "$work/creds.txt" --out "$work/hosts-r1.tsv" > "$work/prime-r1.json"
# One host takes it and reports healthy (the server runs with --healthy-after-s 0): it passes.
cred=$(head -1 "$work/creds.txt")
curl -sS --fail-with-body -H "Authorization: Bearer $cred" "$url/v1/agent/desired" -o /dev/null
curl -sS --fail-with-body -H "Authorization: Bearer $cred" -H 'Content-Type: application/json' "$url/v1/agent/heartbeat" \
  -d "{\"boot_id\":\"b0075eed-0000-4000-8000-000000000001\",\"uptime_s\":60,\"channels\":{\"detections\":{\"version\":$v1,\"state\":\"active\"}}}"
for _ in $(seq 100); do
  [ "$(api "$url/v1/channels/detections" | field stable_version)" = "$v1" ] && break; sleep 0.1
done
[ "$(api "$url/v1/channels/detections" | field stable_version)" = "$v1" ] || fail "release $v1 did not become stable"
v2=$(release '{"rules":["r1","r2","r3","r4"],"serial":2}')
r2=$(api -X POST "$url/v1/rollouts" -d "{\"channel\":\"detections\",\"version\":$v2,\"stages\":[{\"ring\":\"all\",\"percent\":100,\"bake_s\":86400,\"min_hosts\":10000000,\"pacing\":{\"initial\":100000000}}]}" | field id)
api -X POST "$url/v1/rollouts/$r2/start" -d '{}' >/dev/null

# Every host polls once (and is exposed to release 2); wrk gets each host's credential + ETag.
say "priming $hosts hosts' ETags"
"$load_bin" prime --port "${url##*:}" --creds "$work/creds.txt" --out "$work/hosts.tsv" > "$work/prime.json"
curl -sS --fail-with-body -H "Authorization: Bearer $cred" "$url/v1/agent/desired" > "$work/desired.json"
size=$(stat -c %s "$work/desired.json"); put answer_bytes "$size"
curl -sS -D - -o /dev/null -H "Authorization: Bearer $cred" "$url/v1/agent/desired" | tr -d '\r' > "$work/desired.head"

# ---- 3. the reference: nginx, one worker, a static file of the same size
ng="$work/nginx"; mkdir -p "$ng/html" "$ng/tmp"
chmod 755 "$work" "$ng" "$ng/html"  # run as root, nginx's worker reads the file as nobody
cp "$work/desired.json" "$ng/html/desired.json"
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# nginx_conf DIR "HTTP-LEVEL DIRECTIVES" "SERVER BLOCK" > DIR/nginx.conf: one worker, keep-alive, no log
nginx_conf() {
  cat <<NGX
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  types { application/json json; }
  $2
  $3
}
NGX
}
nginx_conf "$ng" "" "server { listen 127.0.0.1:$nport; root $ng/html; }" > "$ng/nginx.conf"
nginx -c "$ng/nginx.conf" -p "$ng" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$nport/desired.json" -o /dev/null && break; sleep 0.05; done
cmp -s <(curl -sf "http://127.0.0.1:$nport/desired.json") "$work/desired.json" || fail "nginx does not serve the file"
curl -sS -D - -o /dev/null "http://127.0.0.1:$nport/desired.json" | tr -d '\r' > "$work/nginx.head"

# ---- 4. load: each repetition runs every target once (interleaved, so noise hits all alike)
wrk_run() {  # MODE CONNS URL -> appends the BENCH json line to $work/wrk-MODE-CONNS.jsonl
  local mode=$1 conns=$2 target=$3 perf_pid=
  if [ "${BENCH_PROFILE:-0}" = 1 ] && [ "$mode" = 304 -o "$mode" = 200 -o "$mode" = heartbeat ] && [ "$rep" = 1 ]; then
    # shellcheck disable=SC2086  # BENCH_PERF_ARGS: e.g. "--call-graph dwarf" for call chains
    perf record -q -e cpu-clock -F 999 ${BENCH_PERF_ARGS:--g} -p "$fleet_pid" -o "$work/perf.data" -- sleep "$dur" 2>/dev/null &
    perf_pid=$!
  fi
  local cg=0
  if [ "${BENCH_PROFILE:-0}" = callgrind ] && [ "$mode" = 304 -o "$mode" = 200 -o "$mode" = heartbeat ] && [ "$rep" = 1 ]; then
    cg=1; callgrind_control -z "$fleet_pid" >/dev/null
  fi
  BENCH_MODE=${mode%-tls} BENCH_HOSTS="${BENCH_HOSTS_FILE:-$work/hosts.tsv}" BENCH_VERSION=$v2 \
    timeout $((dur + 30)) wrk -t1 -c"$conns" -d"${dur}s" --timeout 5s -s bench/wrk_agent.lua "$target" \
    > "$work/wrk.txt" 2>&1 || { cat "$work/wrk.txt" >&2; fail "wrk $mode $conns"; }
  grep -q '^BENCH ' "$work/wrk.txt" || { cat "$work/wrk.txt" >&2; fail "wrk $mode $conns printed no figures"; }
  grep '^BENCH ' "$work/wrk.txt" | sed 's/^BENCH //' >> "$work/wrk-$mode-$conns.jsonl"
  if [ $cg = 1 ]; then  # instructions of exactly this target's requests
    callgrind_control --dump="$mode-$conns" "$fleet_pid" >/dev/null
    local f=
    for _ in $(seq 300); do  # the dump is written when the server next runs
      f=$(ls -t "$work"/callgrind.out.* 2>/dev/null | head -1 || true); [ -n "$f" ] && [ "$f" != "${cg_last:-}" ] && break
      sleep 0.1
    done
    [ -n "$f" ] && [ "$f" != "${cg_last:-}" ] || fail "no callgrind dump for $mode"
    cg_last=$f; sleep 1
    cp "$f" "$out/callgrind.out.$mode-$conns"
    { grep '^BENCH ' "$work/wrk.txt" || true; callgrind_annotate --threshold=100 "$f" 2>/dev/null | head -150; } \
      > "$out/callgrind-$mode-$conns.txt"
  fi
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    perf report -i "$work/perf.data" --no-children --stdio --sort symbol 2>/dev/null \
      | grep -E '^ +[0-9]' | cut -c1-160 | head -40 > "$out/profile-$mode-$conns.txt" || true
    # Inclusive (self + callees): what a request path and the periodic tick cost as a whole.
    perf report -i "$work/perf.data" --children --stdio --sort symbol -g none 2>/dev/null \
      | grep -E '^ +[0-9]' | cut -c1-160 | head -60 > "$out/profile-inclusive-$mode-$conns.txt" || true
  fi
}
for conns in $conns_list; do
  for rep in $(seq "$reps"); do
    say "load: $conns connections, repetition $rep/$reps (${dur} s per target)"
    wrk_run static "$conns" "http://127.0.0.1:$nport/desired.json"
    wrk_run 304 "$conns" "$url"
    wrk_run 200 "$conns" "$url"
    wrk_run heartbeat "$conns" "$url"
  done
done
put rss_kib_after_load "$(rss_kib "$fleet_pid")"

# ---- 5. rollback propagation: LP long polls, then abort the rollout through the API
say "rollback: $lp long polls, then POST /v1/rollouts/$r2/abort"
"$load_bin" longpoll --port "${url##*:}" --creds "$work/creds.txt" --hosts "$lp" --token "$token" \
  --abort "/v1/rollouts/$r2/abort" --wait 60 > "$work/rollback.json" || { cat "$work/rollback.json" >&2; fail "long-poll probe"; }
spid=$fleet_pid; stop_server

# ---- 5b. the TLS path: the same fleet served over TLS (--tls-cert/--tls-key, one listener)
# against nginx serving the same bytes over TLS with the same certificate, same run. Keep-alive
# connections (wrk: one full handshake per connection, then requests), and full handshakes per
# second (openssl s_time -new: connect, handshake, close) and resumed ones (-reuse: tickets).
# BENCH_TLS=0 skips it.
if [ "${BENCH_TLS:-1}" = 1 ]; then
  say "TLS: certificates, the fleet server over TLS, nginx over TLS"
  tl="$work/tls"; mkdir -p "$tl"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$tl/ca.key" -out "$tl/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$tl/srv.key" -out "$tl/srv.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'extendedKeyUsage=serverAuth' > "$tl/ext"
  openssl x509 -req -days 2 -in "$tl/srv.csr" -CA "$tl/ca.pem" -CAkey "$tl/ca.key" \
    -CAcreateserial -extfile "$tl/ext" -out "$tl/srv.pem" 2>/dev/null
  cat "$tl/srv.pem" "$tl/ca.pem" > "$tl/chain.pem"
  chmod 600 "$tl/srv.key"
  start_tls_server() {  # like start_server, over TLS, on the fleet's data dir
    RINGFENCE_ADMIN_TOKEN=$token "$server_bin" --data-dir "$work/fleet" --listen 127.0.0.1:0 \
      --threads 1 --no-access-log --heartbeat-s 3600 --exposed-heartbeat-s 3600 \
      --healthy-after-s 0 --evidence-min-age-s 0 --tls-cert "$tl/chain.pem" --tls-key "$tl/srv.key" \
      > "$work/fleet-tls.out" 2> "$work/fleet-tls.err" &
    spid=$!; pids+=("$spid")
    for _ in $(seq 12000); do
      grep -q '^listening on' "$work/fleet-tls.out" 2>/dev/null && break
      kill -0 "$spid" 2>/dev/null || { cat "$work/fleet-tls.err" >&2; fail "TLS server exited"; }
      sleep 0.01
    done
    grep -q '^listening on' "$work/fleet-tls.out" || fail "TLS server did not start within 120 s"
    tport=$(sed -n 's/^listening on 127.0.0.1://p' "$work/fleet-tls.out")
  }
  start_tls_server
  # A generation per host is issued at start: learn the ETags again, over TLS, for TLS_HOSTS hosts
  # (what a 304 costs does not depend on how many distinct hosts ask).
  tls_hosts=${BENCH_TLS_HOSTS:-$([ $quick = 1 ] && echo 200 || echo 5000)}
  python3 - "$tport" "$tl/ca.pem" "$work/creds.txt" "$tls_hosts" "$work/hosts-tls.tsv" <<'PY'
import http.client, ssl, sys
port, ca, creds, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection("localhost", int(port), context=ctx)
rows = []
for line in open(creds):
    cred = line.strip()
    if not cred:
        continue
    conn.request("GET", "/v1/agent/desired", headers={"Authorization": "Bearer " + cred})
    r = conn.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"prime over TLS: {r.status}")
    rows.append(f"{cred}\t{r.getheader('ETag')}")
    if len(rows) >= n:
        break
open(out, "w").write("\n".join(rows) + "\n")
PY
  ngt="$work/nginx-tls"; mkdir -p "$ngt/tmp"
  chmod 755 "$ngt"; chmod 644 "$tl/srv.key"  # nginx reads it before dropping to nobody
  ntport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  nginx_conf "$ngt" \
    "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache shared:SSL:10m;" \
    "server { listen 127.0.0.1:$ntport ssl; root $ng/html; ssl_certificate $tl/chain.pem; ssl_certificate_key $tl/srv.key; }" \
    > "$ngt/nginx.conf"
  nginx -c "$ngt/nginx.conf" -p "$ngt" &
  pids+=($!)
  for _ in $(seq 100); do
    curl -sf --cacert "$tl/ca.pem" "https://localhost:$ntport/desired.json" -o /dev/null && break; sleep 0.05
  done
  curl -sf --cacert "$tl/ca.pem" "https://localhost:$ntport/desired.json" -o /dev/null || fail "nginx over TLS does not serve the file"
  for conns in $conns_list; do
    for rep in $(seq "$reps"); do
      say "TLS load: $conns connections, repetition $rep/$reps"
      wrk_run static-tls "$conns" "https://127.0.0.1:$ntport/desired.json"
      BENCH_HOSTS_FILE="$work/hosts-tls.tsv" wrk_run 304-tls "$conns" "https://127.0.0.1:$tport"
    done
  done
  # Handshakes: openssl s_time, one client process, HS_S seconds per figure.
  hs_s=$([ $quick = 1 ] && echo 1 || echo 5)
  s_time() {  # PORT new|reuse -> connections per second
    openssl s_time -connect "127.0.0.1:$1" -"$2" -time "$hs_s" -CAfile "$tl/ca.pem" 2>/dev/null \
      | sed -n 's/^\([0-9]*\) connections in \([0-9.]*\) real seconds.*/\1 \2/p' \
      | awk 'NR==1 {if ($2 > 0) printf "%.1f", $1 / $2; else print 0}'
  }
  put hs_new_ours "$(s_time "$tport" new)"; put hs_new_nginx "$(s_time "$ntport" new)"
  put hs_reuse_ours "$(s_time "$tport" reuse)"; put hs_reuse_nginx "$(s_time "$ntport" reuse)"
  put rss_kib_tls "$(rss_kib "$spid")"
  stop_server
fi

# ---- 6. start-up and memory with BIG hosts
say "seeding $big hosts"
"$seed_bin" --data-dir "$work/big" --hosts "$big" > "$work/seed-big.json"
put seed_per_s_big "$(field enrolls_per_s < "$work/seed-big.json")"
start_server big "$work/big"; sleep 1
put start_ms_big "$start_ms"; put start_cpu_ms_big "$start_cpu_ms"; put rss_kib_big "$(rss_kib "$spid")"; stop_server
rm -rf "$work/big"

# ---- 7. the agent's footprint (full runs; the MinSizeRel build the agent ships as)
if [ $quick = 0 ] && [ "${BENCH_AGENT:-1}" = 1 ]; then
  agent_bin=${BENCH_AGENT_BIN:-}  # an agent binary to measure instead of building one
  if [ -z "$agent_bin" ]; then
    say "agent footprint (MinSizeRel build in build-bench-agent)"
    cmake -S . -B build-bench-agent -G Ninja -DCMAKE_BUILD_TYPE=MinSizeRel -DRINGFENCE_TESTS=OFF \
          -DRINGFENCE_WERROR=ON -DCMAKE_CXX_FLAGS=-Wno-error=maybe-uninitialized >/dev/null
    cmake --build build-bench-agent --target ringfence-agent >/dev/null
    agent_bin=build-bench-agent/agent/ringfence-agent
  fi
  bash tests/agent/footprint.sh "$agent_bin" "$server_bin" > "$work/agent.txt" 2>&1 \
    || { cat "$work/agent.txt" >&2; fail "agent footprint"; }
  put agent_stripped_bytes "$(sed -n 's/^stripped: \([0-9]*\) bytes.*/\1/p' "$work/agent.txt")"
  put agent_rss_kib "$(awk '/^t=/ {for (i=1;i<=NF;i++) if ($i=="VmRSS:") v=$(i+1)} END {print v}' "$work/agent.txt")"
  grep -q 'applied and verified' "$work/agent.txt" || fail "the agent did not apply the release"
fi

# ---- 8. report
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$work" "$results" "$json_out" "$hosts" "$big" "$lp" "$dur" "$reps" "$quick" "$conns_list" "$load_start" "$load_end" <<'PY'
import json, os, statistics, sys
work, results, json_out, hosts, big, lp, dur, reps, quick, conns_list, load_start, load_end = sys.argv[1:]
hosts, big, lp, dur, reps = int(hosts), int(big), int(lp), int(dur), int(reps)
kv = dict(line.rstrip("\n").split("\t") for line in open(results) if line.strip())
num = lambda k: float(kv[k]) if k in kv and kv[k] != "" else None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
doc = {"machine": {"cores": os.cpu_count(), "cpu": cpu}, "quick": quick == "1",
       "hosts": hosts, "big": big, "long_polls": lp, "duration_s": dur, "repetitions": reps,
       "answer_bytes": int(kv["answer_bytes"]), "load": [], "memory": {}, "startup_ms": {},
       "loadavg": {"start": load_start, "end": load_end}}
names = {"static": "nginx static (reference)", "304": "GET desired 304", "200": "GET desired 200",
         "heartbeat": "POST heartbeat 204", "static-tls": "nginx static over TLS (reference)",
         "304-tls": "GET desired 304 over TLS"}
bad = []
for conns in conns_list.split():
    ref = None
    for mode in ["static", "304", "200", "heartbeat", "static-tls", "304-tls"]:
        if not os.path.exists(f"{work}/wrk-{mode}-{conns}.jsonl"):
            continue  # the TLS path skipped (BENCH_TLS=0)
        runs = [json.loads(l) for l in open(f"{work}/wrk-{mode}-{conns}.jsonl")]
        errs = sum(r["errors"] for r in runs)
        if errs or any(r["requests"] == 0 for r in runs):
            bad.append(f"{mode} at {conns}: {errs} errors")
        row = {"target": mode, "name": names[mode], "connections": int(conns),
               "rps": statistics.median(r["rps"] for r in runs),
               "p50_ms": statistics.median(r["p50_ms"] for r in runs),
               "p99_ms": statistics.median(r["p99_ms"] for r in runs),
               "rps_runs": [r["rps"] for r in runs], "errors": errs}
        if mode in ("static", "static-tls"):
            ref = row["rps"]
        row["ratio"] = row["rps"] / ref if ref else None
        doc["load"].append(row)
rss0, rssh, rssb = num("rss_kib_0"), num("rss_kib_hosts"), num("rss_kib_big")
doc["memory"] = {"rss_kib_0": rss0, "rss_kib_hosts": rssh, "rss_kib_big": rssb,
                 "rss_kib_hosts_after_load": num("rss_kib_after_load"),
                 "bytes_per_host_hosts": (rssh - rss0) * 1024 / hosts,
                 "bytes_per_host_big": (rssb - rss0) * 1024 / big}
doc["startup_ms"] = {"0": num("start_ms_0"), str(hosts): num("start_ms_hosts"), str(big): num("start_ms_big")}
doc["startup_cpu_ms"] = {"0": num("start_cpu_ms_0"), str(hosts): num("start_cpu_ms_hosts"),
                         str(big): num("start_cpu_ms_big")}
doc["seed_enrolls_per_s"] = {str(hosts): num("seed_per_s_hosts"), str(big): num("seed_per_s_big")}
doc["rollback"] = json.load(open(f"{work}/rollback.json"))
if "hs_new_ours" in kv:
    doc["tls"] = {"handshakes_per_s": {"ours": num("hs_new_ours"), "nginx": num("hs_new_nginx")},
                  "resumed_per_s": {"ours": num("hs_reuse_ours"), "nginx": num("hs_reuse_nginx")},
                  "rss_kib_tls_after_load": num("rss_kib_tls")}
if "agent_rss_kib" in kv:
    doc["agent"] = {"stripped_bytes": num("agent_stripped_bytes"), "rss_kib": num("agent_rss_kib")}
doc["headers"] = {"ours": open(f"{work}/desired.head").read().strip().split("\n"),
                  "nginx": open(f"{work}/nginx.head").read().strip().split("\n")}
json.dump(doc, open(json_out, "w"), indent=2)

p = print
p(f"\n## Ringfence vs nginx, {'--quick' if quick == '1' else 'full run'}: {doc['machine']['cores']} cores, {cpu}")
p(f"{hosts} enrolled hosts; answer {doc['answer_bytes']} B; median of {reps} x {dur} s per figure; "
  "server --threads 1 --no-access-log; wrk -t1 on the same machine")
p(f"Load average (1/5/15 min) at the start {load_start}, at the end {load_end}: the 2 cores are shared "
  "with other builds, so absolute figures are low and noisy; the ratios to nginx (same run, interleaved) are the measure\n")
p("| path | connections | req/s (median) | p50 ms | p99 ms | x nginx | runs req/s |")
p("|---|---:|---:|---:|---:|---:|---|")
for r in doc["load"]:
    p(f"| {r['name']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
      f"{r['ratio']:.2f} | {', '.join(f'{x:,.0f}' for x in r['rps_runs'])} |")
m = doc["memory"]
su, sc = doc["startup_ms"], doc["startup_cpu_ms"]
p("\n| fleet | start-up to `listening on` (wall) | its CPU time | server RSS | bytes per host over the empty server |")
p("|---:|---:|---:|---:|---:|")
p(f"| 0 | {su['0']:.0f} ms | {sc['0']:.0f} ms | {rss0/1024:.1f} MiB | |")
p(f"| {hosts:,} | {su[str(hosts)]:.0f} ms | {sc[str(hosts)]:.0f} ms | {rssh/1024:.1f} MiB | {m['bytes_per_host_hosts']:.0f} |")
p(f"| {big:,} | {su[str(big)]:.0f} ms | {sc[str(big)]:.0f} ms | {rssb/1024:.1f} MiB | {m['bytes_per_host_big']:.0f} |")
p(f"\nRSS of the {hosts:,}-host server after the load runs (every host polled and heartbeated, "
  f"exposed to a rolling release): {m['rss_kib_hosts_after_load']/1024:.1f} MiB")
rb = doc["rollback"]
p(f"\nRollback propagation, {rb['hosts']:,} long polls: answered {rb['answered']:,}; from the abort "
  f"to 50 % {rb['p50_ms']:.0f} ms, 99 % {rb['p99_ms']:.0f} ms, 100 % {rb['p100_ms']:.0f} ms")
if "agent" in doc:
    a = doc["agent"]
    p(f"\nAgent (MinSizeRel, re-measured): stripped {a['stripped_bytes']/1048576:.2f} MiB, "
      f"VmRSS idle in a long poll {a['rss_kib']/1024:.2f} MiB")
elif quick != "1":
    p("\nAgent footprint (not measured in this run, BENCH_AGENT=0; from agent/FOOTPRINT.md):")
    rows = [l.rstrip() for l in open("agent/FOOTPRINT.md")]
    head = next((i for i, l in enumerate(rows) if l.startswith("| build |")), None)
    if head is not None:
        p(rows[head]); p(rows[head + 1])  # the header and its separator
    for l in rows:
        if l.startswith("| **MinSizeRel**"):
            p(l)
if "tls" in doc:
    t = doc["tls"]
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "?"
    p("\n| TLS connections, openssl s_time (one client) | ours /s | nginx /s | x nginx |")
    p("|---|---:|---:|---:|")
    hs, rs = t["handshakes_per_s"], t["resumed_per_s"]
    p(f"| full handshakes (connect, ECDHE-P256 + ECDSA, close) | {hs['ours']:,.0f} | {hs['nginx']:,.0f} | {ratio(hs['ours'], hs['nginx'])} |")
    p(f"| resumed sessions (tickets) | {rs['ours']:,.0f} | {rs['nginx']:,.0f} | {ratio(rs['ours'], rs['nginx'])} |")
    p(f"\nServer RSS after the TLS runs: {t['rss_kib_tls_after_load']/1024:.1f} MiB")
p(f"\nSeeding (Service::enroll, one SQLite row each): {doc['seed_enrolls_per_s']}")
p(f"Written: {json_out}")
if bad:
    print("bench: FAILED: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
if rb["answered"] != rb["hosts"]:
    print("bench: FAILED: not every long poll was answered", file=sys.stderr)
    sys.exit(1)
PY
# The throughput figures as a chart beside the reference (full runs; the quick smoke has no use
# for one): bench/throughput.svg, linked from bench/RESULTS.md.
if [ $quick = 0 ]; then python3 bench/chart.py "$json_out" bench/throughput.svg; fi
