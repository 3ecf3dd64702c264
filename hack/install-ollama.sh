#!/usr/bin/env bash
# Builds ollama from the Go module proxy (with llama.cpp's vendored headers taken from the
# node-llama-cpp npm package) and caches the binary outside the clone, keyed by version.
# Prints the binary's path. A second call returns at once.
set -euo pipefail
VERSION=${OLLAMA_VERSION:-0.17.4}
NLC_VERSION=${NODE_LLAMA_CPP_VERSION:-3.22.1}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
BIN="$CACHE/ollama-$VERSION/bin/ollama"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v npm >/dev/null || { echo "install-ollama: npm is needed for llama.cpp headers" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/evalflow-ollama.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
echo "install-ollama: building ollama $VERSION (5-8 minutes on 2 cores, once)" >&2
npm pack --silent "node-llama-cpp@$NLC_VERSION" >/dev/null
tar xzf "node-llama-cpp-$NLC_VERSION.tgz" package/llama/gitRelease.bundle
git clone -q --bare package/llama/gitRelease.bundle llama.git
mkdir hdr && git --git-dir=llama.git archive HEAD vendor | tar x -C hdr
CGO_ENABLED=1 CGO_CPPFLAGS="-I$W/hdr/vendor" GOBIN="$W/bin" GOFLAGS=-mod=mod GOWORK=off \
  go install -ldflags="-s -w -X github.com/ollama/ollama/version.Version=$VERSION" "github.com/ollama/ollama@v$VERSION" >&2
mkdir -p "$(dirname "$BIN")"
mv "$W/bin/ollama" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "$BIN"
