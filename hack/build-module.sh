#!/usr/bin/env bash
# Builds a command of a module whose go.mod has replace directives (so `go install`
# refuses it) from a copy of the module, into OUT:
#   hack/build-module.sh MODULE@VERSION PACKAGE OUT [LDFLAGS]
# e.g. hack/build-module.sh knative.dev/func@v0.44.0 ./cmd/func ~/.cache/evalflow/func/func
# With PATCH set, runs it (a shell command) in the copy before building.
set -euo pipefail
MOD=$1 PKG=$2 OUT=$3 LDFLAGS=${4:-}
export GOWORK=off GOFLAGS=-mod=mod
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d); trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
DIR=$(go mod download -json "$MOD" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$DIR" "$WORK/src" && chmod -R u+w "$WORK/src"
[ -z "${PATCH:-}" ] || (cd "$WORK/src" && eval "$PATCH")
(cd "$WORK/src" && go build -trimpath -ldflags "-s -w $LDFLAGS" -o "$OUT.tmp" "$PKG" && mv "$OUT.tmp" "$OUT")
