#!/usr/bin/env bash
# Builds CoreDNS — the node's cluster DNS — from the Go module proxy and caches it outside
# the clone, keyed by version. Prints the binary's path. Cold: a few minutes, once.
set -euo pipefail
V=${COREDNS_VERSION:-1.12.4}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
BIN="$CACHE/coredns-$V/coredns"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "install-coredns: building CoreDNS v$V (a few minutes, once)" >&2
mkdir -p "$(dirname "$BIN")"
WORK=$(mktemp -d); trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
export GOWORK=off GOFLAGS=-mod=mod
# Its go.mod has replace directives, so go install refuses it: build a copy.
DIR=$(go mod download -json "github.com/coredns/coredns@v$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$DIR" "$WORK/coredns" && chmod -R u+w "$WORK/coredns"
(cd "$WORK/coredns" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" . && mv "$BIN.tmp" "$BIN")
echo "$BIN"
