#!/usr/bin/env bash
# The test command: installs what is missing, builds (warnings are errors), runs the whole suite.
#   scripts/test.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
# The dashboard's browser test: Debian chromium + playwright-core/uPlot from npm (no browser download).
bash scripts/install-web-test-deps.sh
# Redocly's OpenAPI linter (npm) for the ops.lint test.
bash scripts/install-ops-test-deps.sh
build="${RINGFENCE_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGFENCE_WERROR=ON >/dev/null
cmake --build "$build" -j 2
cd "$build"
ctest --output-on-failure -j 2 --timeout 900
