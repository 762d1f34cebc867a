#!/usr/bin/env bash
# Copies the dashboard's one third-party library, uPlot, into web/vendor/ (git-ignored), which
# ringfence-server serves at /vendor/uPlot.iife.min.js and /vendor/uPlot.min.css.
#   scripts/vendor-web.sh            # from anywhere
# Idempotent: does nothing when web/vendor/ already holds this version. Offline-tolerant: when
# the npm registry cannot be reached it uses a copy already in the cache, else fails clearly.
# The npm install goes to a cache outside the tree (RINGFENCE_WEB_CACHE, default
# ~/.cache/ringfence/web-vendor), never into the repository.
set -euo pipefail

UPLOT_VERSION=1.6.32
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/web/vendor"
cache="${RINGFENCE_WEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringfence/web-vendor}"
files=(uPlot.iife.min.js uPlot.min.css)

stamp="$vendor/UPLOT_VERSION"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$UPLOT_VERSION" ] &&
   [ -s "$vendor/${files[0]}" ] && [ -s "$vendor/${files[1]}" ]; then
  exit 0
fi

dist="$cache/node_modules/uplot/dist"
cached_version() {
  node -e 'try{console.log(require(process.argv[1]).version)}catch{console.log("")}' \
    "$cache/node_modules/uplot/package.json" 2>/dev/null || true
}

if [ "$(cached_version)" != "$UPLOT_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "vendor-web: npm is not installed (scripts/install-deps.sh test installs it)" >&2
    exit 1
  fi
  mkdir -p "$cache"
  [ -f "$cache/package.json" ] || echo '{"private": true}' > "$cache/package.json"
  echo "vendor-web: npm install uplot@$UPLOT_VERSION into $cache"
  if ! npm install --prefix "$cache" --no-audit --no-fund --no-save --loglevel=error \
       "uplot@$UPLOT_VERSION" >&2; then
    echo "vendor-web: could not install uplot@$UPLOT_VERSION and no cached copy exists" >&2
    exit 1
  fi
fi

mkdir -p "$vendor"
for f in "${files[@]}"; do
  cp "$dist/$f" "$vendor/$f.tmp"
  mv "$vendor/$f.tmp" "$vendor/$f"
done
echo "$UPLOT_VERSION" > "$stamp"
echo "vendor-web: web/vendor/ has uPlot $UPLOT_VERSION"
