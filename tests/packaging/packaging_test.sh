#!/usr/bin/env bash
# packaging.debs (tests/packaging/CMakeLists.txt): builds the Debian packages from this build
# directory and checks them as an operator would meet them. Every check prints what it saw; the
# script fails on the first one that does not hold.
#   packaging_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"
src="$(cd "$2" && pwd)"
here="$src/tests/packaging"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing: run scripts/install-deps.sh test"; }
for tool in cpack lintian systemd-analyze dpkg-deb python3 curl; do need "$tool"; done

# The dashboard's third-party files are fetched into web/vendor (git-ignored); the package must
# carry them.
bash "$src/scripts/vendor-web.sh"

echo "== cpack"
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack"; }
debs=("$work"/out/*.deb)
[ "${#debs[@]}" -eq 3 ] || fail "expected 3 packages, got: ${debs[*]}"
for p in ringfence-server ringfence-agent ringfence-cli; do
  ls "$work"/out/${p}_*.deb >/dev/null 2>&1 || fail "no $p package"
done

echo "== lintian (errors fail; warnings listed)"
for deb in "${debs[@]}"; do
  echo "-- $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
  out="$(lintian --fail-on error --tag-display-limit 0 "$deb" 2>&1)" || { echo "$out"; fail "lintian errors in $(basename "$deb")"; }
  echo "${out:-  (no tags)}"
done

echo "== contents and maintainer scripts"
root="$work/root"
mkdir -p "$root"
for deb in "${debs[@]}"; do
  name="$(dpkg-deb -f "$deb" Package)"
  dpkg-deb -x "$deb" "$root"
  dpkg-deb -e "$deb" "$work/control-$name"
  echo "-- $name: $(dpkg-deb -f "$deb" Depends)"
  dpkg-deb -c "$deb" | awk '{print "   " $1 " " $2 " " $6}' | grep -v '/$' || true
  grep -q '^/etc/ringfence/' "$work/control-$name/conffiles" || fail "$name: no conffile"
  for s in postinst prerm postrm; do
    [ -e "$work/control-$name/$s" ] || continue
    sh -n "$work/control-$name/$s" || fail "$name $s: shell syntax"
  done
done
for f in usr/sbin/ringfence-server usr/sbin/ringfence-agent usr/bin/ringfence \
         etc/ringfence/server.conf etc/ringfence/agent.conf etc/ringfence/cli.conf \
         lib/systemd/system/ringfence-server.service lib/systemd/system/ringfence-agent.service \
         usr/share/man/man8/ringfence-server.8.gz usr/share/man/man8/ringfence-agent.8.gz \
         usr/share/man/man1/ringfence.1.gz usr/share/ringfence/web/index.html \
         usr/share/ringfence/web/vendor/uPlot.iife.min.js; do
  [ -e "$root/$f" ] || fail "not installed: /$f"
done
for m in "$root"/usr/share/man/man*/*.gz; do
  zcat "$m" | grep -q '^\.TH' || fail "$m is not a man page"
done

echo "== systemd-analyze verify"
# Verified on this system's unit tree, with the unpacked binaries in place of /usr/sbin/... (so
# that the executables exist); the man pages were checked above (--man=no).
mkdir -p "$work/units"
for unit in ringfence-server ringfence-agent; do
  sed "s|/usr/sbin/|$root/usr/sbin/|" "$root/lib/systemd/system/$unit.service" \
    >"$work/units/$unit.service"
  out="$(systemd-analyze verify --man=no "$work/units/$unit.service" 2>&1)" ||
    { echo "$out"; fail "systemd-analyze verify $unit"; }
  echo "-- $unit.service: ${out:-ok}"
done

echo "== the installed server, with its installed configuration"
python3 "$here/notify_listener.py" "$work/server.notify" "$work/server.notified" &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/server.notify" ] && break; sleep 0.1; done
mkdir -p "$work/data"
admin="$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
NOTIFY_SOCKET="$work/server.notify" RINGFENCE_ADMIN_TOKEN="$admin" \
  "$root/usr/sbin/ringfence-server" --config "$root/etc/ringfence/server.conf" \
  --data-dir "$work/data" --web-dir "$root/usr/share/ringfence/web" --listen 127.0.0.1:0 \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
pids+=($server_pid)
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/^listening on [^ ]*:\([0-9]*\)$/\1/p' "$work/server.out")"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/server.err"; fail "the installed server did not start"; }
base="http://127.0.0.1:$port"
for _ in $(seq 50); do grep -q 'READY=1' "$work/server.notified" 2>/dev/null && break; sleep 0.1; done
grep -q '^READY=1|STATUS=listening on 127.0.0.1:' "$work/server.notified" ||
  fail "no READY=1 from the server: $(cat "$work/server.notified" 2>/dev/null)"
echo "server notified: $(head -1 "$work/server.notified")"
[ "$(curl -fsS "$base/healthz" -o /dev/null -w '%{http_code}')" = 200 ] || fail "/healthz"
curl -fsS "$base/" | grep -q '<html' || fail "the installed dashboard is not served"
curl -fsS "$base/vendor/uPlot.iife.min.js" -o /dev/null || fail "the dashboard's uPlot is not served"
kill -HUP "$server_pid"
for _ in $(seq 50); do grep -q 'RELOADING=1' "$work/server.notified" && break; sleep 0.1; done
grep -q 'RELOADING=1' "$work/server.notified" || fail "no RELOADING=1 on SIGHUP"

echo "== the installed CLI"
"$root/usr/bin/ringfence" --version | grep -q '^ringfence ' || fail "ringfence --version"
RINGFENCE_CLI_CONFIG="$root/etc/ringfence/cli.conf" "$root/usr/bin/ringfence" \
  --server "$base" --token "$admin" rings create canary --rank 0 --buckets 0:100 >/dev/null ||
  fail "ringfence rings create through the installed CLI"
RINGFENCE_CLI_CONFIG="$root/etc/ringfence/cli.conf" "$root/usr/bin/ringfence" \
  --server "$base" --token "$admin" rings list | grep -q canary || fail "ringfence rings list"

echo "== the installed agent"
set +e
"$root/usr/sbin/ringfence-agent" --config "$root/etc/ringfence/agent.conf" >"$work/agent0.out" 2>&1
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "an unconfigured agent exits 2 (RestartPreventExitStatus), got $rc"
grep -q -- '--server' "$work/agent0.out" || fail "an unconfigured agent names the missing option"
echo "unconfigured agent: exit $rc: $(head -1 "$work/agent0.out")"
token="$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"pkg"}' "$base/v1/enrollment-tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
sed -e "s|^# server = .*|server = \"$base\"|" -e "s|^# enroll-token = .*|enroll-token = \"$token\"|" \
  -e "s|^state-dir = .*|state-dir = \"$work/agent-state\"|" \
  -e "s|^content-dir = .*|content-dir = \"$work/agent-content\"|" \
  "$root/etc/ringfence/agent.conf" >"$work/agent.conf"
echo "public-key = \"$work/data/signing.pub\"" >>"$work/agent.conf"
python3 "$here/notify_listener.py" "$work/agent.notify" "$work/agent.notified" &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/agent.notify" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$work/agent.notify" WATCHDOG_USEC=400000 \
  "$root/usr/sbin/ringfence-agent" --config "$work/agent.conf" >"$work/agent.out" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
for _ in $(seq 100); do
  [ "$(grep -c '^WATCHDOG=1' "$work/agent.notified" 2>/dev/null || true)" -ge 4 ] && break
  sleep 0.1
done
grep -q '^READY=1' "$work/agent.notified" || { cat "$work/agent.out"; fail "no READY=1 from the agent"; }
pings="$(grep -c '^WATCHDOG=1' "$work/agent.notified" || true)"
[ "$pings" -ge 4 ] || fail "the agent sent $pings watchdog pings (WatchdogSec 0.4 s: one per 0.2 s expected)"
echo "agent notified: READY=1 and $pings watchdog pings"
hosts=0
for _ in $(seq 100); do
  hosts="$(curl -fsS -H "Authorization: Bearer $admin" "$base/v1/hosts" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d.get("hosts", d) if isinstance(d, dict) else d))')"
  [ "$hosts" -ge 1 ] && break
  sleep 0.1
done
[ "$hosts" -ge 1 ] || { cat "$work/agent.out"; fail "the installed agent did not enroll"; }
kill -TERM "$agent_pid"
wait "$agent_pid" || true
grep -q '^STOPPING=1' "$work/agent.notified" || fail "no STOPPING=1 from the agent on SIGTERM"
kill -TERM "$server_pid"
wait "$server_pid" || true
grep -q '^STOPPING=1' "$work/server.notified" || fail "no STOPPING=1 from the server on SIGTERM"
echo "PASS: 3 packages built, lintian clean of errors, units verified, installed binaries ran"
