#!/usr/bin/env bash
# Builds Traefik — Knative Serving's networking layer on the node (its Knative
# provider; Kourier, Contour and Istio need Envoy) — from the Go module proxy and
# caches it outside the clone, keyed by version. Prints the binary's path.
set -euo pipefail
V=${TRAEFIK_VERSION:-3.6.12}
BIN="${EVALFLOW_CACHE:-$HOME/.cache/evalflow}/traefik-$V/traefik"
if [ ! -x "$BIN" ]; then
  echo "install-traefik: building Traefik v$V (5–20 minutes, once)" >&2
  "$(dirname "$0")/build-module.sh" "github.com/traefik/traefik/v3@v$V" ./cmd/traefik "$BIN"
fi
echo "$BIN"
