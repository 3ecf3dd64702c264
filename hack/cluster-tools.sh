#!/usr/bin/env bash
# Builds the cluster's own programs from the Go module proxy — etcd, the Kubernetes
# commands, CoreDNS (cluster DNS) and Traefik (Knative Serving's networking layer) —
# and caches them outside the clone, in one directory named by all four versions.
# They are built in one scratch module, so the packages they share are compiled once:
# client-go, gRPC, OpenTelemetry, etcd's client and more are a third of Traefik's
# packages and two thirds of CoreDNS's (docs/ci.md). Builds what is missing of the
# programs asked for, in one go build; prints the directory.
#   hack/cluster-tools.sh [kube] [coredns] [traefik]     (none: all three)
# kube: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, and kubectl, with which the release test applies the release manifest
# as a user would (no Docker engine here, so no kind; ../shared/tools/node.md).
set -euo pipefail
K8S=${KUBE_VERSION:-1.34.4}
ETCD=${ETCD_VERSION:-3.6.5}
COREDNS=${COREDNS_VERSION:-1.12.4}
TRAEFIK=${TRAEFIK_VERSION:-3.6.12}
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
DIR="$CACHE/cluster-k8s-v$K8S-etcd-v$ETCD-coredns-v$COREDNS-traefik-v$TRAEFIK"
KUBE_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
bins=""
for w in ${*:-kube coredns traefik}; do
  case $w in
    kube) bins="$bins etcd $KUBE_CMDS" ;;
    coredns | traefik) bins="$bins $w" ;;
    *) echo "cluster-tools: no $w (kube, coredns, traefik)" >&2; exit 2 ;;
  esac
done
missing() { for b in $bins; do [ -x "$DIR/$b" ] || echo "$b"; done; }
[ -z "$(missing)" ] && { echo "$DIR"; exit 0; }
mkdir -p "$DIR"
exec 9>"$DIR/.lock" && flock 9 # make -j runs the install scripts side by side
todo=$(missing | tr '\n' ' ')
[ -z "$todo" ] && { echo "$DIR"; exit 0; }
echo "cluster-tools: building $todo(Kubernetes v$K8S, etcd v$ETCD, CoreDNS v$COREDNS, Traefik v$TRAEFIK; 20–40 min cold, once)" >&2
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export GOWORK=off GOFLAGS=-mod=mod
M=$(go env GOMODCACHE)/cache/download
go mod download k8s.io/kubernetes@v$K8S github.com/traefik/traefik/v3@v$TRAEFIK
# k8s.io/kubernetes replaces its staging modules with directories, and Traefik three
# modules with forks: the scratch module repeats both.
{
  echo "module evalflow.local/cluster-tools"
  echo "go 1.25.0"
  echo "require ("
  echo "	k8s.io/kubernetes v$K8S"
  echo "	go.etcd.io/etcd/server/v3 v$ETCD"
  echo "	github.com/coredns/coredns v$COREDNS"
  echo "	github.com/traefik/traefik/v3 v$TRAEFIK"
  echo ")"
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 v0.'"${K8S#1.}"'#p' "$M/k8s.io/kubernetes/@v/v$K8S.mod"
  sed -n '/^replace (/,/^)/p' "$M/github.com/traefik/traefik/v3/@v/v$TRAEFIK.mod"
} >"$WORK/go.mod"
mkdir "$WORK/etcd"
cat >"$WORK/etcd/main.go" <<'GO'
// etcd: Debian's 3.4 breaks the API server's watch cache, so build 3.6.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat >"$WORK/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/coredns/coredns"
	_ "github.com/traefik/traefik/v3/cmd/traefik"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
pkgs=""
for b in $todo; do
  case $b in
    etcd) pkgs="$pkgs ./etcd" ;;
    coredns) pkgs="$pkgs github.com/coredns/coredns" ;;
    traefik) pkgs="$pkgs github.com/traefik/traefik/v3/cmd/traefik" ;;
    *) pkgs="$pkgs k8s.io/kubernetes/cmd/$b" ;;
  esac
done
MINOR=$(echo "$K8S" | cut -d. -f2)
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
# (Traefik stays version "dev": any other makes it ask update.traefik.io for news.)
(cd "$WORK" && go mod tidy -e >/dev/null 2>&1 && mkdir out &&
  go build -tags tools -trimpath -ldflags "$LDFLAGS" -o out/ $pkgs)
for b in $todo; do mv "$WORK/out/$b" "$DIR/$b"; done
echo "$DIR"
