#!/usr/bin/env bash
# Builds the oras CLI (a real OCI client the tests pull artifacts back with) from the
# Go module proxy and caches it outside the clone, keyed by version. Prints its path.
set -euo pipefail
VERSION=${ORAS_VERSION:-1.3.6}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
BIN="$CACHE/oras-$VERSION/bin/oras"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "install-oras: building oras $VERSION (about 30 s, once)" >&2
GOBIN="$CACHE/oras-$VERSION/bin" GOFLAGS=-mod=mod GOWORK=off go install "oras.land/oras/cmd/oras@v$VERSION" >&2
echo "$BIN"
