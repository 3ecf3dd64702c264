#!/usr/bin/env bash
# What the results page's browser tests and benchmark need: Debian's chromium, and
# playwright-core (pinned; it drives that chromium, never downloads a browser of its
# own) installed once with npm into the cache, keyed by version. Prints the
# node_modules directory that holds playwright-core.
set -euo pipefail
VERSION=1.64.1
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
DIR=$CACHE/playwright-core-$VERSION
"$(dirname "$0")/apt-install.sh" chromium
if [ ! -f "$DIR/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null || "$(dirname "$0")/apt-install.sh" nodejs npm
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
  (cd "$DIR.tmp" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund "playwright-core@$VERSION" >&2)
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
fi
echo "$DIR/node_modules"
