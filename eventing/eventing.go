// Package eventing holds evalflow's Knative Eventing manifests (the namespaces,
// feature flags, RBAC, Redis, the registry, the PingSources), embedded so that the
// evalflow binary reads them wherever it runs. kubectl and make deploy apply the
// files themselves.
package eventing

import "embed"

// FS is this directory's manifests.
//
//go:embed *.yaml
var FS embed.FS

// Features is the config-features ConfigMap's file in FS.
const Features = "config-features.yaml"
