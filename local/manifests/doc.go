// Package manifests holds the offline checks of evalflow's cluster manifests
// (kind-config.yaml, broker/, eventing/, triggers/, functions/*/func.yaml): the cluster
// cannot run on the development machines, so every manifest is decoded strictly into
// its real type and validated as the cluster would validate it.
package manifests
