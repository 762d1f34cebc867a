#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/web) needs, and nothing that downloads a
# browser: Debian's chromium (/usr/bin/chromium) through apt-get, playwright-core and uplot from
# tests/web/package-lock.json through `npm ci` (tests/web/node_modules, git-ignored), and the
# vendored uPlot in web/vendor/ (scripts/vendor-web.sh).
#   bash scripts/install-web-test-deps.sh        # from the repository root; idempotent
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "install-web-test-deps: installing chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends chromium
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "install-web-test-deps: npm is missing (scripts/install-deps.sh test installs Node.js)" >&2
  exit 1
fi

web_tests="$root/tests/web"
marker="$web_tests/node_modules/.package-lock.json"
if [ ! -f "$marker" ] || [ "$web_tests/package-lock.json" -nt "$marker" ] ||
   [ ! -d "$web_tests/node_modules/playwright-core" ]; then
  echo "install-web-test-deps: npm ci in tests/web"
  # playwright-core never downloads a browser; the variable makes sure nothing else tries.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$web_tests" --no-audit --no-fund --loglevel=error
fi

bash "$root/scripts/vendor-web.sh"
