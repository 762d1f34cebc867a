#!/usr/bin/env bash
# The main job: install what is missing, build (Release), start ringfence-server on its embedded
# SQLite in a temporary data dir with a simulated fleet of a few thousand hosts, play a good
# rollout through every ring, then the content of 19 July 2024 (a template with 21 fields, a
# consumer with 20 values) — halted in the canary and rolled back — with the timeline and the
# summary figures. Stops everything at the end unless --keep-running.
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
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument '$1' (--keep-running, --hosts N)" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/install-deps.sh build
# python3 (scenarios.py) is in the test profile; only pull that profile in when it is missing.
if ! command -v python3 >/dev/null 2>&1; then
  bash scripts/install-deps.sh test
fi

build=build-demo  # its own dir: scripts/test.sh keeps build/ for the test configuration
echo "demo: configuring and building (Release, Ninja, $build/)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRINGFENCE_TESTS=OFF >/dev/null
cmake --build "$build" --target ringfence-server fleetsim sample-sensor

# The dashboard's chart library; the demo runs without charts if it cannot be had.
bash scripts/vendor-web.sh || echo "demo: dashboard charts unavailable (vendor-web.sh failed)"

echo
echo "demo: a fleet of $hosts simulated hosts; rings canary 1% / early 10% / broad the rest"
exec python3 scripts/scenarios.py --scenario demo --build-dir "$build" --hosts "$hosts" "${keep[@]}"
