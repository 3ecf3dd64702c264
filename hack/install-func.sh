#!/usr/bin/env bash
# Builds the func CLI (knative.dev/func) from the Go module proxy and caches it
# outside the clone, keyed by version. Prints the binary's path. Cold: about 5 minutes.
set -euo pipefail
V=${FUNC_VERSION:-0.44.0}
BIN="${EVALFLOW_CACHE:-$HOME/.cache/evalflow}/func-$V/func"
if [ ! -x "$BIN" ]; then
  echo "install-func: building the func CLI v$V (about 5 min, once)" >&2
  "$(dirname "$0")/build-module.sh" "knative.dev/func@v$V" ./cmd/func "$BIN" "-X knative.dev/func/pkg/version.Vers=v$V"
fi
echo "$BIN"
