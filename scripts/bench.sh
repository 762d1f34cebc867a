#!/usr/bin/env bash
# Benchmarks the agent hot paths against nginx serving a static file of the same size, in ONE
# run on loopback with wrk. Writes bench/out/results.md (and prints it).
#   scripts/bench.sh [--quick]      --quick: 2 000 hosts, 2 s runs, 1 repetition (CTest smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
hosts=100000; dur=10; reps=3
[ $quick = 1 ] && { hosts=2000; dur=2; reps=1; }

[ $quick = 1 ] || bash scripts/install-deps.sh bench
build="${RINGFENCE_BENCH_BUILD:-build-bench}"
if [ $quick = 0 ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRINGFENCE_TESTS=OFF >/dev/null
  cmake --build "$build" --target ringfence-server
fi
server_bin="$build/server/ringfence-server"
out=bench/out; mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

token="bench-admin-token-0123456789"
RINGFENCE_ADMIN_TOKEN=$token "$server_bin" --data-dir "$work/data" --listen 127.0.0.1:0 --threads 1 \
  --no-access-log --heartbeat-s 300 > "$work/server.out" 2> "$work/server.err" &
spid=$!; pids+=($spid)
for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o '[0-9]*$' "$work/server.out")
url="http://127.0.0.1:$port"
rss_kib() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
api() { curl -sS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }

rss0=$(rss_kib $spid)
# A rollout in progress offers every host a signed release, so answers have their real size.
api -X POST "$url/v1/rings" -d '{"name":"all","rank":0,"selector":{"buckets":[0,10000]}}' >/dev/null
api -X POST "$url/v1/channels" -d '{"name":"detections"}' >/dev/null
printf '{"rules":["r1","r2","r3"]}' > "$work/c.json"
sha=$(curl -sS -H "Authorization: Bearer $token" --data-binary @"$work/c.json" "$url/v1/blobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha256"])')
api -X POST "$url/v1/channels/detections/releases" -d "{\"sha256\":\"$sha\"}" >/dev/null
api -X POST "$url/v1/rollouts" -d '{"channel":"detections","version":1,"stages":[{"ring":"all","bake_s":86400,"min_hosts":10000000}]}' >/dev/null
api -X POST "$url/v1/rollouts/1/start" >/dev/null
etok=$(api -X POST "$url/v1/enrollment-tokens" -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

echo "bench: enrolling $hosts hosts through POST /v1/agent/enroll"
t0=$(date +%s.%N)
python3 bench/enroll.py "$port" "$etok" "$hosts" "$work/hosts.lua"
t1=$(date +%s.%N)
sleep 1
rssN=$(rss_kib $spid)
enroll_rate=$(python3 -c "print(round($hosts/($t1-$t0)))")
per_host=$(python3 -c "print(round(($rssN-$rss0)*1024/$hosts))")

# The answer size nginx serves.
cred=$(sed -n '2p' "$work/hosts.lua" | sed 's/{"\([^"]*\)".*/\1/')
curl -sS -H "Authorization: Bearer $cred" "$url/v1/agent/desired" > "$work/desired.json"
size=$(stat -c %s "$work/desired.json")
mkdir -p "$work/nginx/html" "$work/nginx/tmp"
cp "$work/desired.json" "$work/nginx/html/desired.json"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  types { application/json json; }
  server { listen 127.0.0.1:0; root $work/nginx/html; }
}
NGX
# nginx cannot listen on port 0: pick a free port.
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/listen 127.0.0.1:0/listen 127.0.0.1:$nport/" "$work/nginx/nginx.conf"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>/dev/null &
pids+=($!)
sleep 0.5

# run NAME CONNS URL [LUA] [MODE] -> "rps p50_ms p99_ms" (median of reps by rps)
run() {
  local name=$1 conns=$2 target=$3 lua=${4:-} mode=${5:-}
  local rows=()
  for _ in $(seq $reps); do
    local args=(-t1 -c"$conns" -d"${dur}s" --latency)
    [ -n "$lua" ] && args+=(-s "$lua")
    BENCH_HOSTS="$work/hosts.lua" BENCH_MODE="$mode" wrk "${args[@]}" "$target" > "$work/wrk.txt" 2>&1
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
    rows+=("$rps $p50 $p99")
  done
  printf '%s\n' "${rows[@]}" | sort -n | awk -v n=$reps 'NR==int((n+1)/2)'
}
to_ms() { python3 -c "
import sys,re
v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v)
print(round(float(m.group(1))*{'us':0.001,'ms':1,'s':1000}[m.group(2)],3) if m else v)" "$1"; }

{
  echo "## Agent hot paths vs nginx (scripts/bench.sh$([ $quick = 1 ] && echo ' --quick'))"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); server and wrk on the same box, server --threads 1."
  echo "Hosts enrolled: $hosts; answer size $size bytes; each figure the median of $reps x ${dur}s wrk runs."
  echo
  echo "| path | connections | req/s | p50 ms | p99 ms | ratio to nginx |"
  echo "|---|---:|---:|---:|---:|---:|"
} > "$out/results.md"
for conns in 64 256; do
  read -r nrps n50 n99 < <(run nginx $conns "http://127.0.0.1:$nport/desired.json")
  echo "| nginx static $size B (reference) | $conns | $nrps | $(to_ms $n50) | $(to_ms $n99) | 1.00 |" >> "$out/results.md"
  for spec in "desired 304:bench/desired.lua:304:GET" "desired 200:bench/desired.lua:200:GET" "heartbeat 204:bench/heartbeat.lua::POST"; do
    IFS=: read -r name lua mode _ <<< "$spec"
    read -r rps p50 p99 < <(run "$name" $conns "$url" "$lua" "$mode")
    ratio=$(python3 -c "print(f'{$rps/$nrps:.2f}')")
    echo "| $name | $conns | $rps | $(to_ms $p50) | $(to_ms $p99) | $ratio |" >> "$out/results.md"
    echo "bench: $name @ $conns: $rps req/s (x$ratio nginx)"
  done
done
{
  echo
  echo "| memory and enrolment | value |"
  echo "|---|---:|"
  echo "| server RSS, 0 hosts | $((rss0 / 1024)) MiB |"
  echo "| server RSS, $hosts hosts | $((rssN / 1024)) MiB |"
  echo "| bytes per enrolled host | $per_host |"
  echo "| enrolments per second (HTTP, 16 clients, one SQLite write each) | $enroll_rate |"
} >> "$out/results.md"
cat "$out/results.md"
# The smoke run must have measured every path.
! grep -qE '\|  *\|' "$out/results.md"
