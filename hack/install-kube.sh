#!/usr/bin/env bash
# Builds a real Kubernetes — etcd, kube-apiserver, kube-controller-manager, and the
# node's kubelet, kube-scheduler and kube-proxy, and kubectl — from the Go module proxy, cached
# outside the clone with CoreDNS and Traefik (hack/cluster-tools.sh). Prints the
# directory holding the binaries.
set -euo pipefail
exec "$(dirname "$0")/cluster-tools.sh" kube
