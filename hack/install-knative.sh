#!/usr/bin/env bash
# Builds a Knative component from source with ko (no Docker engine, no release
# download), on evalflow's own base image:
#   eventing (default): core, the in-memory channel and the MT channel broker;
#   serving: core, with the networking and caching resources its release bundles.
# The images are kept in a registry's storage under the cache, and the manifests with
# their registry written REGISTRY (devkit/knative pushes the images to the node's
# registry and applies them). Keyed by version; prints the cache directory.
# Cold: about 10 minutes a component on 2 cores, once (see ../shared/tools/knative.md).
set -euo pipefail
COMPONENT=${1:-eventing}
V=${KNATIVE_VERSION:-0.50.0}
KO_V=${KO_VERSION:-0.18.1}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR="$CACHE/knative-$COMPONENT-v$V-ko-v$KO_V"
if [ -f "$DIR/$COMPONENT.yaml" ]; then echo "$DIR"; exit 0; fi
echo "install-knative: building Knative $COMPONENT v$V with ko v$KO_V (about 10 min, once)" >&2
export GOWORK=off GOFLAGS=-mod=mod
KO="$CACHE/ko-$KO_V/ko"
if [ ! -x "$KO" ]; then
  GOBIN="$CACHE/ko-$KO_V" go install "github.com/google/ko@v$KO_V"
fi
moddir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
WORK=$(mktemp -d)
REG_PID=""
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; wait 2>/dev/null; chmod -R u+w "$WORK"; rm -rf "$WORK"; }
trap cleanup EXIT
# A registry on loopback whose storage becomes the cache.
PORT=$((20000 + RANDOM % 20000))
while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((20000 + RANDOM % 20000)); done
mkdir -p "$WORK/registry"
cat >"$WORK/registry/config.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $WORK/registry/data}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
REG=127.0.0.1:$PORT
(cd "$ROOT" && GOWORK= GOFLAGS= go run ./runner/cmd/evalflow-image -base "$REG/evalflow/base:static" >&2)
SRC=$(moddir "knative.dev/$COMPONENT@v$V")
cp -r "$SRC" "$WORK/src" && chmod -R u+w "$WORK/src"
case $COMPONENT in
  eventing)
    KO_DIRS="config/core config/channels/in-memory-channel config/brokers/mt-channel-broker"
    EXTRA="$WORK/src/third_party/eventing-integrations-latest/eventing-transformations-images.yaml $WORK/src/third_party/eventing-integrations-latest/eventing-integrations-images.yaml" ;;
  serving)
    KO_DIRS="config/core"
    # What serving's release bundles from the modules its go.mod requires.
    NET=$(cd "$WORK/src" && moddir "knative.dev/networking@$(go list -m -f '{{.Version}}' knative.dev/networking)")
    CACHING=$(cd "$WORK/src" && moddir "knative.dev/caching@$(go list -m -f '{{.Version}}' knative.dev/caching)")
    EXTRA="$CACHING/config/image.yaml"
    for f in certificate config-network domain-claim ingress serverlessservice; do EXTRA="$EXTRA $NET/config/$f.yaml"; done ;;
  *) echo "install-knative: no component $COMPONENT (eventing, serving)" >&2; exit 2 ;;
esac
PLATFORM=linux/$(go env GOARCH)
(cd "$WORK/src" &&
  export KO_DOCKER_REPO="$REG/knative" KO_DEFAULTBASEIMAGE="$REG/evalflow/base:static" &&
  for d in $KO_DIRS; do
    # One go build at a time: side by side, two builds compile the packages every
    # image shares (knative.dev/pkg, client-go) twice; one at a time, the first
    # compiles them on both cores and the rest find them in the build cache.
    "$KO" resolve -R --jobs 1 --insecure-registry --platform="$PLATFORM" -f "$d/" || exit 1
    echo "---"
  done &&
  for f in $EXTRA; do cat "$f"; echo "---"; done
) >"$WORK/out.yaml"
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=""
rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
mv "$WORK/registry/data" "$DIR.tmp/registry"
sed "s#$REG/#REGISTRY/#g" "$WORK/out.yaml" >"$DIR.tmp/$COMPONENT.yaml"
rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
echo "$DIR"
