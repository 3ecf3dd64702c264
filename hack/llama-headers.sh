#!/usr/bin/env bash
# Prints a directory holding llama.cpp's vendored headers (nlohmann json, miniaudio, stb,
# ...), which ollama's Go module leaves out and its cgo code needs. They come from the
# llama.cpp release bundled in the node-llama-cpp npm package, and are cached outside the
# clone, keyed by version: one path, so Go's build cache serves every cgo build after the
# first (ollama's and llama-echo's).
set -euo pipefail
NLC_VERSION=${NODE_LLAMA_CPP_VERSION:-3.22.1}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
DIR="$CACHE/llama-headers-nlc-$NLC_VERSION"
if [ -d "$DIR/vendor" ]; then echo "$DIR/vendor"; exit 0; fi
command -v npm >/dev/null || { echo "llama-headers: npm is needed for llama.cpp's headers" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/evalflow-llama.XXXXXX")
trap 'rm -rf "$W"' EXIT
(cd "$W" && npm pack --silent "node-llama-cpp@$NLC_VERSION" >/dev/null &&
  tar xzf "node-llama-cpp-$NLC_VERSION.tgz" package/llama/gitRelease.bundle &&
  git clone -q --bare package/llama/gitRelease.bundle llama.git &&
  mkdir hdr && git --git-dir=llama.git archive HEAD vendor | tar x -C hdr)
mkdir -p "$CACHE"
rm -rf "$DIR.tmp" && mv "$W/hdr" "$DIR.tmp" && mv "$DIR.tmp" "$DIR"
echo "$DIR/vendor"
