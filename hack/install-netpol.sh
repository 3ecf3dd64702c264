#!/usr/bin/env bash
# Builds hack/netpol, the node's NetworkPolicy enforcer (kube-network-policies' policy
# engine, from the Go module proxy, behind iptables' NFQUEUE), cached outside the clone
# keyed by the hash of its sources (its go.mod pins every version). Prints its path.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/netpol" && pwd)"
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
HASH=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-12)
DIR="$CACHE/netpol-$HASH"
BIN="$DIR/netpol"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$DIR"
exec 9>"$DIR/.lock" && flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "install-netpol: building the NetworkPolicy enforcer (about 2 min, once)" >&2
(cd "$SRC" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
echo "$BIN"
