#!/usr/bin/env bash
# Builds Knative Eventing from source with ko (no Docker engine, no release download):
# core, the in-memory channel and the MT channel broker, on evalflow's own base image.
# The images are kept in a registry's storage under the cache, and the manifests with
# their registry written REGISTRY (devkit/knative pushes the images to the node's
# registry and applies them). Keyed by version; prints the cache directory.
# Cold: about 10 minutes on 2 cores, once (see ../shared/tools/knative.md).
set -euo pipefail
V=${KNATIVE_EVENTING_VERSION:-0.50.0}
KO_V=${KO_VERSION:-0.18.1}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR="$CACHE/knative-eventing-v$V-ko-v$KO_V"
if [ -f "$DIR/eventing.yaml" ]; then echo "$DIR"; exit 0; fi
echo "install-knative: building Knative Eventing v$V with ko v$KO_V (about 10 min, once)" >&2
export GOWORK=off GOFLAGS=-mod=mod
KO="$CACHE/ko-$KO_V/ko"
if [ ! -x "$KO" ]; then
  GOBIN="$CACHE/ko-$KO_V" go install "github.com/google/ko@v$KO_V"
fi
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
SRC=$(go mod download -json "knative.dev/eventing@v$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$SRC" "$WORK/eventing" && chmod -R u+w "$WORK/eventing"
PLATFORM=linux/$(go env GOARCH)
(cd "$WORK/eventing" &&
  export KO_DOCKER_REPO="$REG/knative" KO_DEFAULTBASEIMAGE="$REG/evalflow/base:static" &&
  for d in config/core config/channels/in-memory-channel config/brokers/mt-channel-broker; do
    "$KO" resolve -R --insecure-registry --platform="$PLATFORM" -f "$d/" || exit 1
    echo "---"
  done
  cat third_party/eventing-integrations-latest/eventing-transformations-images.yaml
  echo "---"
  cat third_party/eventing-integrations-latest/eventing-integrations-images.yaml
) >"$WORK/eventing.yaml"
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=""
mkdir -p "$DIR.tmp"
rm -rf "$DIR.tmp/registry" && mv "$WORK/registry/data" "$DIR.tmp/registry"
sed "s#$REG/#REGISTRY/#g" "$WORK/eventing.yaml" >"$DIR.tmp/eventing.yaml"
rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
echo "$DIR"
