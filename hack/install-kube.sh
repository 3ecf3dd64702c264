#!/usr/bin/env bash
# Builds a real Kubernetes — etcd, kube-apiserver, kube-controller-manager, and the
# node's kubelet, kube-scheduler and kube-proxy — from the Go module proxy and caches
# the binaries outside the clone, keyed by version (no Docker engine here, so no kind;
# see ../shared/tools/kubernetes.md and node.md). Only missing binaries are built.
# Prints the directory holding the binaries. Cold: about 10 minutes on 2 cores, once.
set -euo pipefail
K8S=${KUBE_VERSION:-1.34.4}
ETCD=${ETCD_VERSION:-3.6.5}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
DIR="$CACHE/k8s-v$K8S-etcd-v$ETCD"
CMDS="kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy"
missing=""
for b in etcd $CMDS; do [ -x "$DIR/$b" ] || missing="$missing $b"; done
if [ -z "$missing" ]; then
  echo "$DIR"; exit 0
fi
echo "install-kube: building$missing (Kubernetes v$K8S, etcd v$ETCD; up to 10 min, once)" >&2
mkdir -p "$DIR"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export GOWORK=off GOFLAGS=-mod=mod

# etcd: Debian's 3.4 breaks the API server's watch cache, so build 3.6.
if [ ! -x "$DIR/etcd" ]; then
mkdir "$WORK/etcd"
cat >"$WORK/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
(cd "$WORK/etcd" && go mod init evalflow.local/etcd >/dev/null 2>&1 &&
  go get "go.etcd.io/etcd/server/v3@v$ETCD" >&2 && go mod tidy >&2 &&
  go build -trimpath -ldflags "-s -w" -o "$DIR/etcd.tmp" . && mv "$DIR/etcd.tmp" "$DIR/etcd")
fi
[ "$missing" = " etcd" ] && { echo "$DIR"; exit 0; }

# The Kubernetes commands: k8s.io/kubernetes has replace directives
# for its staging modules, so build from a scratch module that repeats them.
mkdir "$WORK/k8s"
go mod download -json "k8s.io/kubernetes@v$K8S" >/dev/null
MOD="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S.mod"
{
  echo "module evalflow.local/k8s"
  echo "go 1.24"
  echo "require k8s.io/kubernetes v$K8S"
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 v0.'"${K8S#1.}"'#p' "$MOD"
} >"$WORK/k8s/go.mod"
cat >"$WORK/k8s/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
MINOR=$(echo "$K8S" | cut -d. -f2)
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
(cd "$WORK/k8s" && go mod tidy -e >&2 &&
  for cmd in $CMDS; do
    [ -x "$DIR/$cmd" ] && continue
    go build -tags tools -trimpath -ldflags "$LDFLAGS" -o "$DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" && mv "$DIR/$cmd.tmp" "$DIR/$cmd"
  done)
echo "$DIR"
