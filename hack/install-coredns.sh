#!/usr/bin/env bash
# Builds CoreDNS, the node's cluster DNS, from the Go module proxy, cached outside the
# clone with the Kubernetes commands (hack/cluster-tools.sh). Prints the binary's path.
set -euo pipefail
echo "$("$(dirname "$0")/cluster-tools.sh" coredns)/coredns"
