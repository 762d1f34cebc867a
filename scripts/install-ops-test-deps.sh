#!/usr/bin/env bash
# npm dependencies of tests/ops (Redocly's OpenAPI linter), pinned by tests/ops/package-lock.json.
# Idempotent: does nothing when node_modules matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/../tests/ops"
if [ -x node_modules/.bin/redocly ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
