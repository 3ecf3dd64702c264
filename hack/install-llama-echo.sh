#!/usr/bin/env bash
# Builds hack/llama-echo — a completions server that scores echoed prompts, for the
# loglikelihood tests — with cgo against ollama's llama.cpp bindings, and caches it
# outside the clone, keyed by ollama's version and the source's hash. Prints its path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
SUM=$(cat "$HERE/llama-echo/go.mod" "$HERE/llama-echo/main.go" | sha256sum | cut -c1-12)
BIN="$CACHE/llama-echo-$SUM/llama-echo"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
HDR=$("$HERE/llama-headers.sh")
echo "install-llama-echo: building llama-echo (a few minutes on 2 cores, once)" >&2
mkdir -p "$(dirname "$BIN")"
(cd "$HERE/llama-echo" && CGO_ENABLED=1 CGO_CPPFLAGS="-I$HDR" GOWORK=off GOFLAGS=-mod=mod \
  go build -ldflags="-s -w" -o "$BIN.tmp" . >&2)
mv "$BIN.tmp" "$BIN"
echo "$BIN"
