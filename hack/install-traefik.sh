#!/usr/bin/env bash
# Builds Traefik, Knative Serving's networking layer on the node (pure Go, with a
# Knative provider), from the Go module proxy, cached outside the clone with the
# Kubernetes commands (hack/cluster-tools.sh). Prints the binary's path.
set -euo pipefail
echo "$("$(dirname "$0")/cluster-tools.sh" traefik)/traefik"
