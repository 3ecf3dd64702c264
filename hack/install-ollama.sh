#!/usr/bin/env bash
# Builds ollama from the Go module proxy (with llama.cpp's vendored headers from
# hack/llama-headers.sh) and caches the binary outside the clone, keyed by version.
# Prints the binary's path. A second call returns at once.
set -euo pipefail
VERSION=${OLLAMA_VERSION:-0.17.4}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
BIN="$CACHE/ollama-$VERSION/bin/ollama"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
HDR=$("$(dirname "$0")/llama-headers.sh")
W=$(mktemp -d "${TMPDIR:-/tmp}/evalflow-ollama.XXXXXX")
trap 'rm -rf "$W"' EXIT
echo "install-ollama: building ollama $VERSION (5-8 minutes on 2 cores, once)" >&2
CGO_ENABLED=1 CGO_CPPFLAGS="-I$HDR" GOBIN="$W/bin" GOFLAGS=-mod=mod GOWORK=off \
  go install -ldflags="-s -w -X github.com/ollama/ollama/version.Version=$VERSION" "github.com/ollama/ollama@v$VERSION" >&2
mkdir -p "$(dirname "$BIN")"
mv "$W/bin/ollama" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "$BIN"
