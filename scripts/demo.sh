#!/usr/bin/env bash
# The main job: install what is missing, build (Release), start ringfence-server on its embedded
# SQLite in a temporary data dir with a simulated fleet of a few thousand hosts, play a good
# rollout through every ring, then the content of 19 July 2024 (a template with 21 fields, a
# consumer with 20 values) — halted in the canary and rolled back — with the timeline and the
# summary figures. Stops everything at the end unless --keep-running; INT or TERM (Ctrl-C) stops
# the server and the fleet it started at any point.
#
#   scripts/demo.sh [--keep-running] [--hosts N]
set -euo pipefail
cd "$(dirname "$0")/.."

keep=()
hosts=3000
while [ $# -gt 0 ]; do
  case "$1" in
    --keep-running) keep=(--keep-running) ;;
    --hosts) hosts="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument '$1' (--keep-running, --hosts N)" >&2; exit 2 ;;
  esac
  shift
done

# The build's packages and python3 (scenarios.py), and Node.js/npm for the dashboard's chart
# library when the machine has none; not the test suite's (gtest, prometheus, wrk, nginx).
bash scripts/install-deps.sh demo

build=build-demo  # its own dir: scripts/test.sh keeps build/ for the test configuration
echo "demo: configuring and building (Release, Ninja, $build/)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRINGFENCE_TESTS=OFF >/dev/null
cmake --build "$build" --target ringfence-server fleetsim sample-sensor

# The dashboard's chart library; the demo runs without charts if it cannot be had.
bash scripts/vendor-web.sh || echo "demo: dashboard charts unavailable (vendor-web.sh failed)"

# scenarios.py runs in a session of its own, with the server and fleetsim it starts, so that on
# INT, TERM or any exit this script can stop exactly that group: first a TERM to scenarios.py
# (it stops fleetsim and the server, and prints their reports), then whatever of the group is
# still alive after the grace period is killed. Ctrl-C reaches this shell only (the group is not
# in the terminal's foreground), and the trap turns it into that same sequence.
group=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$group" ] || return 0
  if kill -0 "$group" 2>/dev/null; then
    kill -TERM "$group" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$group" 2>/dev/null || break; sleep 0.5; done
  fi
  if kill -0 -- "-$group" 2>/dev/null; then
    echo "demo: stopping what is left of the demo's processes" >&2
    kill -TERM -- "-$group" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$group" 2>/dev/null || true
  fi
  group=""
}
trap 'echo "demo: interrupted, stopping the server and the fleet" >&2; cleanup; exit 130' INT
trap 'echo "demo: terminated, stopping the server and the fleet" >&2; cleanup; exit 143' TERM
trap cleanup EXIT

echo
echo "demo: a fleet of $hosts simulated hosts; rings canary 1% / early 10% / broad the rest"
setsid python3 scripts/scenarios.py --scenario demo --build-dir "$build" --hosts "$hosts" \
  "${keep[@]}" &
group=$!
rc=0
wait "$group" || rc=$?
cleanup
exit "$rc"
