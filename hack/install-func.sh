#!/usr/bin/env bash
# Builds the func CLI (knative.dev/func) from the Go module proxy and caches it
# outside the clone, keyed by version. Prints the binary's path. Cold: about 5 minutes.
#
# One line of func is changed: its host builder can build any set of platforms (the
# client's BuildWithPlatforms), but the CLI lets --platform through for S2I only, so it
# always built linux/amd64, arm64 and arm/v7. Let through, --platform makes the host
# builder build the one platform a cluster's nodes run (local/deploy), a third of the
# work. Still so in v0.50.1. The cache key names the patch.
set -euo pipefail
V=${FUNC_VERSION:-0.44.0}
BIN="${EVALFLOW_CACHE:-$HOME/.cache/evalflow}/func-$V-hostplatform/func"
if [ ! -x "$BIN" ]; then
  echo "install-func: building the func CLI v$V (about 5 min, once)" >&2
  OLD='if c.Platform != "" \&\& c.Builder != builders.S2I {'
  NEW='if c.Platform != "" \&\& c.Builder != builders.S2I \&\& c.Builder != builders.Host {'
  PATCH="sed -i 's/$OLD/$NEW/' cmd/build.go && grep -q 'builders.S2I && c.Builder != builders.Host' cmd/build.go" \
    "$(dirname "$0")/build-module.sh" "knative.dev/func@v$V" ./cmd/func "$BIN" "-X knative.dev/func/pkg/version.Vers=v$V"
fi
echo "$BIN"
