#!/usr/bin/env bash
# Builds the func CLI (knative.dev/func) from the Go module proxy and caches it
# outside the clone, keyed by version. Prints the binary's path. Cold: about 5 minutes.
set -euo pipefail
V=${FUNC_VERSION:-0.44.0}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
BIN="$CACHE/func-$V/func"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "install-func: building the func CLI v$V (about 5 min, once)" >&2
mkdir -p "$(dirname "$BIN")"
WORK=$(mktemp -d); trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
export GOWORK=off GOFLAGS=-mod=mod
# Its go.mod has a replace directive, so go install refuses it: build a copy.
DIR=$(go mod download -json "knative.dev/func@v$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$DIR" "$WORK/func" && chmod -R u+w "$WORK/func"
(cd "$WORK/func" && go build -trimpath -ldflags "-s -w -X knative.dev/func/pkg/version.Vers=v$V" -o "$BIN.tmp" ./cmd/func && mv "$BIN.tmp" "$BIN")
echo "$BIN"
