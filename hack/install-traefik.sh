#!/usr/bin/env bash
# Builds Traefik — Knative Serving's networking layer on the node (its Knative
# provider; Kourier, Contour and Istio need Envoy) — from the Go module proxy and
# caches it outside the clone, keyed by version. Prints the binary's path.
set -euo pipefail
V=${TRAEFIK_VERSION:-3.6.12}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
BIN="$CACHE/traefik-$V/traefik"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "install-traefik: building Traefik v$V (a few minutes, once)" >&2
mkdir -p "$(dirname "$BIN")"
WORK=$(mktemp -d); trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
export GOWORK=off GOFLAGS=-mod=mod
# Its go.mod has replace directives, so go install refuses it: build a copy.
DIR=$(go mod download -json "github.com/traefik/traefik/v3@v$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$DIR" "$WORK/traefik" && chmod -R u+w "$WORK/traefik"
(cd "$WORK/traefik" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" ./cmd/traefik && mv "$BIN.tmp" "$BIN")
echo "$BIN"
