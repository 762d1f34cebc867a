#!/usr/bin/env bash
# Installs every Debian package Ringfence needs to build, test and run its demo.
# Idempotent: when everything is present it only runs `dpkg-query` and exits.
# Usage: scripts/install-deps.sh [build|demo|test|bench|all]   (default: test)
set -euo pipefail

profile="${1:-test}"

build_pkgs=(
  build-essential cmake ninja-build ccache pkg-config
  libboost1.81-dev nlohmann-json3-dev libsqlite3-dev libspdlog-dev libsodium-dev
  libexpected-dev libcli11-dev libssl-dev libpq-dev libhowardhinnant-date-dev libsystemd-dev
  help2man                            # man pages of the Debian packages, made from --help
)
test_pkgs=(
  libgtest-dev libgmock-dev json-schema-test-suite python3 curl prometheus
  wrk nginx-light   # bench_smoke runs scripts/bench.sh --quick in the suite
  openssl testssl.sh haproxy          # TLS tests: certificates made in the test, the scanner, a proxy
  postgresql-15 libpq-dev             # the PostgreSQL store's tests (initdb into a temp dir)
  clang libfuzzer-14-dev              # libFuzzer targets (short runs in the suite)
  lintian systemd                     # the Debian packages' checks (systemd-analyze verify)
  python3-feedparser                  # the release-notes feeds read by a real feed parser
)
demo_pkgs=(
  python3   # scripts/scenarios.py (standard library only) drives the demo
)
bench_pkgs=(
  wrk nginx-light libbenchmark-dev linux-perf valgrind
)

want=("${build_pkgs[@]}")
case "$profile" in
  build) ;;
  demo) want+=("${demo_pkgs[@]}") ;;
  test) want+=("${test_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  all) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "install-deps: unknown profile '$profile' (build|demo|test|bench|all)" >&2; exit 2 ;;
esac

# Node.js and npm (the OpenAPI linter, the dashboard's browser test): a machine may already carry
# a newer Node.js with its own npm, which conflicts with Debian's npm package, so only the
# commands are checked.
if [ "$profile" != build ] && ! command -v npm >/dev/null 2>&1; then
  want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
