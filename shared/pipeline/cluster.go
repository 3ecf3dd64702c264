package pipeline

import (
	"context"
	"fmt"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/runstore"
)

// Cluster connects to the cluster of Kubernetes run: with the run's kubeconfig, or
// evalflow's own (Run.OwnCluster). A kubeconfig it cannot use is kube.ErrBadKubeconfig,
// and evalflow.ErrPermanent.
func (e *Env) Cluster(ctx context.Context, run *evalflow.Run) (*kube.Cluster, error) {
	kubeconfig := ""
	if !run.OwnCluster {
		var err error
		if kubeconfig, err = e.Store.Secret(ctx, run.ID, runstore.SecretKubeconfig); err != nil {
			return nil, err
		}
	}
	return e.ClusterOf(run, kubeconfig)
}

// ClusterOf connects to run's cluster: evalflow's own (Run.OwnCluster), or the one
// of its kubeconfig, read already (with the run's other secrets, Store.Secrets).
func (e *Env) ClusterOf(run *evalflow.Run, kubeconfig string) (*kube.Cluster, error) {
	switch {
	case run.OwnCluster && e.own == nil:
		return nil, evalflow.Permanent(fmt.Errorf("run %s runs in evalflow's own cluster, and this deployment has none (EVALFLOW_OWN_CLUSTER)", run.ID))
	case run.OwnCluster:
		return e.own, nil
	case kubeconfig == "":
		return nil, fmt.Errorf("%w: run %s has none (any more)", kube.ErrBadKubeconfig, run.ID)
	}
	return e.clusters.Connect([]byte(kubeconfig))
}

// OwnCluster reports whether the deployment has a cluster of its own, where runs
// without a kubeconfig run their Jobs.
func (e *Env) OwnCluster() bool { return e.own != nil }
