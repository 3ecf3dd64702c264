package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestTheRunnerLinksNoClusterOrStoreClient keeps the job small: the memory target of
// docs/benchmarks.md is met by a runner that links no Kubernetes client (whose
// packages register every API type at start) and no Redis client; only the
// pipeline's steps need those.
func TestTheRunnerLinksNoClusterOrStoreClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/", "github.com/redis/", "github.com/evalflow/evalflow/shared/pipeline", "github.com/evalflow/evalflow/shared/kube"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("evalflow-runner links %s", pkg)
			}
		}
	}
}
