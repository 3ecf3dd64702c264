#!/usr/bin/env bash
# Builds CoreDNS — the node's cluster DNS — from the Go module proxy and caches it outside
# the clone, keyed by version. Prints the binary's path. Cold: a few minutes, once.
set -euo pipefail
V=${COREDNS_VERSION:-1.12.4}
BIN="${EVALFLOW_CACHE:-$HOME/.cache/evalflow}/coredns-$V/coredns"
if [ ! -x "$BIN" ]; then
  echo "install-coredns: building CoreDNS v$V (a few minutes, once)" >&2
  "$(dirname "$0")/build-module.sh" "github.com/coredns/coredns@v$V" . "$BIN"
fi
echo "$BIN"
