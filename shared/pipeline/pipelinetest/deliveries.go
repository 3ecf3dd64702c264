package pipelinetest

import (
	"os"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
)

// Deliveries is a real API server that reviews the tokens Knative Eventing's OIDC
// delivers with: the namespaces "evalflow" and "intruder", and an identity granted
// what eventing/rbac.yaml grants a step (ClusterRole evalflow-delivery-review:
// reviewing tokens) and nothing else.
type Deliveries struct {
	// Config is what a step needs to take only deliveries for Audience.
	Config   map[string]string
	Audience string
	admin    kubernetes.Interface
	kube     *localserver.Kube
	step     localserver.KubeUser
}

// NewDeliveries starts the API server for a step whose Triggers' audience is audience.
func NewDeliveries(t testing.TB, audience string) *Deliveries {
	t.Helper()
	step := localserver.KubeUser{Name: "evalflow-step", Token: "step-token-0123456789"}
	k := testserver.Kube(t, localserver.KubeOptions{Users: []localserver.KubeUser{step}})
	admin := testserver.KubeAdmin(t, k)
	testserver.Namespace(t, admin, "evalflow")
	testserver.Namespace(t, admin, "intruder")
	testserver.GrantCluster(t, admin, step.Name, []rbacv1.PolicyRule{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}}})
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, k.Kubeconfig(step.Token, "evalflow"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Deliveries{Config: map[string]string{"EVALFLOW_OWN_CLUSTER": path, "EVALFLOW_DELIVERY_AUDIENCE": audience},
		Audience: audience, admin: admin, kube: k, step: step}
}

// Trigger is the token the broker's filter delivers trigger's events with: its
// ServiceAccount's (as Knative Eventing names it), for the step's audience.
func (d *Deliveries) Trigger(t testing.TB, trigger string) string {
	return d.Token(t, "evalflow", trigger+"-oidc-eventing.knative.dev-trigger", d.Audience)
}

// Token is a token of the ServiceAccount namespace/name for audience.
func (d *Deliveries) Token(t testing.TB, namespace, name, audience string) string {
	t.Helper()
	return testserver.AccountToken(t, d.admin, namespace, name, audience)
}

// Kubeconfig is the step's kubeconfig file.
func (d *Deliveries) Kubeconfig() string { return d.Config["EVALFLOW_OWN_CLUSTER"] }

// KubeconfigAt is the step's kubeconfig file with the API server at url instead (for
// one that does not answer).
func (d *Deliveries) KubeconfigAt(t testing.TB, url string) string {
	t.Helper()
	k := *d.kube
	k.URL = url
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, k.Kubeconfig(d.step.Token, "evalflow"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
