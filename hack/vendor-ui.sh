#!/usr/bin/env bash
# Bundles the results page's charting library from npm into the binary's files:
# Chart.js, pinned to a version and to the tarball's published integrity, copied to
# shared/ui/static/vendor/ (go:embed takes it from there; the page loads nothing from
# the network). Run it to change the version; `hack/vendor-ui.sh --check` verifies
# that the committed file is the pinned tarball's.
set -euo pipefail
VERSION=4.5.1
INTEGRITY=sha512-GIjfiT9dbmHRiYi6Nl2yFCq7kkwdkp1W/lp2J99rX0yo9tgJGn3lKQATztIjb5tVtevcBtIdICNWqlq5+E8/Pw==
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/shared/ui/static/vendor
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "chart.js@$VERSION" >/dev/null
got="sha512-$(openssl dgst -sha512 -binary "chart.js-$VERSION.tgz" | base64 -w0)"
[ "$got" = "$INTEGRITY" ] || { echo "chart.js@$VERSION: integrity $got, want $INTEGRITY" >&2; exit 1; }
tar xzf "chart.js-$VERSION.tgz" package/dist/chart.umd.min.js package/LICENSE.md
if [ "${1:-}" = --check ]; then
  cmp package/dist/chart.umd.min.js "$DEST/chart.umd.min.js" && cmp package/LICENSE.md "$DEST/chart.js-LICENSE.md"
  echo "shared/ui/static/vendor: chart.js@$VERSION as published"
  exit 0
fi
mkdir -p "$DEST"
cp package/dist/chart.umd.min.js "$DEST/chart.umd.min.js"
cp package/LICENSE.md "$DEST/chart.js-LICENSE.md"
echo "chart.js@$VERSION -> $DEST"
